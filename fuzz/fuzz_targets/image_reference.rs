//! Image references: parsing and normalisation (`reference::ImageRef`) and image globs.
//!
//! Asserted beyond "no panic", for every reference that parses: displaying it and parsing
//! again gives the same value; the normalised form parses, to the same registry, repository,
//! tag and digest, and normalising it again changes nothing (idempotent); a written tag is a
//! tag; `repository_path` is `registry/repository` and begins the normalised form; and a glob
//! of the normalised form, or of the bare repository, matches the image it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::reference::{ImageGlobs, ImageRef};

/// Characters that make a glob more than a literal.
fn is_literal(text: &str) -> bool {
    !text.contains(['*', '?', '[', ']', '{', '}', '\\', '!'])
}

fuzz_target!(|data: &[u8]| {
    let Ok(written) = std::str::from_utf8(data) else {
        return;
    };
    // The input as a glob too: compiling any pattern is an answer, never a panic.
    let globs = ImageGlobs::new([written]);

    let image = match ImageRef::parse(written) {
        Ok(image) => image,
        Err(err) => {
            assert_eq!(err.written, written);
            assert!(err.to_string().contains("invalid image reference"));
            return;
        }
    };
    if let Ok(globs) = &globs {
        let _ = globs.first_match(&image);
        assert_eq!(globs.matches(&image), globs.first_match(&image).is_some());
    }

    // parse → display → parse.
    let shown = image.to_string();
    assert_eq!(shown, written);
    assert_eq!(ImageRef::parse(&shown).as_ref(), Ok(&image));

    // Shape.
    assert!(!image.registry().is_empty(), "{written:?}: no registry");
    assert!(!image.repository().is_empty(), "{written:?}: no repository");
    assert_eq!(
        image.repository_path(),
        format!("{}/{}", image.registry(), image.repository())
    );
    if image.tag_written() {
        assert!(
            image.tag().is_some(),
            "{written:?}: a written tag went missing"
        );
    }
    if !image.tag_written() && image.digest().is_none() {
        assert_eq!(
            image.tag(),
            Some("latest"),
            "{written:?}: untagged is latest"
        );
    }
    let normalized = image.normalized();
    assert!(
        normalized.starts_with(&image.repository_path()),
        "{normalized:?} does not begin with {:?}",
        image.repository_path()
    );

    // Normalisation is idempotent and loses nothing.
    let again = ImageRef::parse(&normalized)
        .unwrap_or_else(|err| panic!("{written:?} normalises to {normalized:?}, which is {err}"));
    assert_eq!(
        again.normalized(),
        normalized,
        "{written:?}: not idempotent"
    );
    assert_eq!(again.registry(), image.registry());
    assert_eq!(again.repository(), image.repository());
    assert_eq!(again.tag(), image.tag());
    assert_eq!(again.digest(), image.digest());
    assert_eq!(again.tag_written(), again.tag().is_some());

    // A literal glob of what the image is matches it.
    for pattern in [normalized.as_str(), image.repository_path().as_str()] {
        if !is_literal(pattern) {
            continue;
        }
        let globs = ImageGlobs::new([pattern])
            .unwrap_or_else(|err| panic!("{pattern:?} is a literal but not a glob: {err}"));
        assert!(
            globs.matches(&image),
            "{pattern:?} does not match {written:?}"
        );
        assert_eq!(globs.first_match(&image), Some(pattern));
    }
});
