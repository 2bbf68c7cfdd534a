//! AdmissionReview bytes through the whole review on the embedded default configuration: the
//! same `admission::handle` the HTTPS handler calls, with the `NoRegistry` evidence source (the
//! embedded default asks no registry anything, so nothing here touches the network).
//!
//! Asserted beyond "no panic": a body `handle` refuses is one `admission::parse` refuses, for
//! the same reason; an answered review echoes the request's uid, carries the verdict's
//! `allowed`, explains every denial, serialises to JSON that reads back as the same answer, and
//! the same body judged twice gets the same verdict (decisions are pure functions of the body).
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use portcullis::admission;
use portcullis::config::LoadedConfig;
use portcullis::engine::Engine;
use portcullis::evidence::NoRegistry;

/// Built once: building the engine per input would measure the engine's start-up, not reviews.
static STATE: LazyLock<(tokio::runtime::Runtime, Engine)> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let loaded = LoadedConfig::embedded().expect("the embedded default configuration is valid");
    let engine = Engine::new(loaded, Arc::new(NoRegistry)).expect("an engine on the default");
    (runtime, engine)
});

fuzz_target!(|data: &[u8]| {
    let (runtime, engine) = &*STATE;
    let judged = runtime.block_on(admission::handle(engine, data, None));
    let (review, verdict) = match judged {
        Err(err) => {
            let parsed = admission::parse(data);
            assert!(
                matches!(&parsed, Err(again) if again.reason() == err.reason()),
                "handle refused ({}) what parse says is {parsed:?}",
                err.reason()
            );
            let _ = err.to_string();
            return;
        }
        Ok(answer) => answer,
    };
    let request = admission::parse(data).expect("handle answered, so the body parses");
    let response = review.response.as_ref().expect("an answer has a response");
    assert_eq!(
        response.uid, request.uid,
        "the answer echoes the request's uid"
    );
    assert_eq!(response.allowed, verdict.allowed);
    assert!(review.request.is_none(), "the request is not echoed back");
    if !verdict.allowed {
        assert!(verdict.status_code.is_some(), "a denial has a status code");
        assert!(
            verdict.message.as_deref().is_some_and(|m| !m.is_empty()),
            "a denial says why"
        );
    }

    let bytes = serde_json::to_vec(&review).expect("the answer serialises");
    let back: serde_json::Value = serde_json::from_slice(&bytes).expect("and reads back");
    assert_eq!(back["apiVersion"], admission::API_VERSION);
    assert_eq!(back["kind"], admission::KIND);
    assert_eq!(back["response"]["uid"].as_str(), Some(request.uid.as_str()));
    assert_eq!(back["response"]["allowed"].as_bool(), Some(verdict.allowed));

    let (_, again) = runtime
        .block_on(admission::handle(engine, data, None))
        .expect("the same body is answered again");
    assert_eq!(again.allowed, verdict.allowed, "same body, same verdict");
    assert_eq!(again.outcome, verdict.outcome);
    assert_eq!(again.message, verdict.message);
});
