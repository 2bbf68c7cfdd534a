//! Configuration parsing and validation: YAML bytes through `LoadedConfig::from_yaml`, the
//! same path `serve`, `check` and the hot reload take (strict serde parse, then `validate`).
//!
//! Asserted beyond "no panic": an accepted configuration validates clean again and is named by
//! the hash of its bytes; a refused one says why (a syntax error names a key; an invalid one
//! lists at least one problem, each with a key and a message). The engine is not built: that reads files the configuration names (keys, Rego),
//! and a fuzzer naming `/dev/zero` would test the file system, not portcullis.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::{ConfigError, LoadedConfig, identity_of};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let loaded = LoadedConfig::from_yaml(text, "fuzz");
    match &loaded {
        Ok(loaded) => {
            let problems = loaded.config.validate();
            assert!(problems.is_empty(), "accepted, yet {problems:?}");
            assert_eq!(loaded.identity, identity_of(data));
            assert_eq!(loaded.origin, "fuzz");
        }
        Err(err) => {
            let message = err.to_string();
            assert!(message.starts_with("fuzz"), "{message}");
            match err {
                ConfigError::Syntax { key, .. } => assert!(!key.is_empty()),
                ConfigError::Invalid { problems, .. } => {
                    assert!(!problems.is_empty(), "refused with no problem");
                    for problem in problems {
                        assert!(!problem.key.is_empty(), "{problem:?}");
                        assert!(!problem.message.is_empty(), "{problem:?}");
                    }
                }
                // Whitespace, comments or a bare null: refused as a likely mistake.
                ConfigError::Empty { .. } => {}
                ConfigError::Read { .. } => panic!("from_yaml read a file"),
            }
        }
    }
});
