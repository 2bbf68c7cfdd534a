#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use portcullis::config::RegoSyntax;
use portcullis::policy::rego::{RegoBundle, RegoSource};
use std::time::{Duration, Instant};

fn run(text: &str) {
    let b = RegoBundle::compile(
        vec![RegoSource {
            path: "p.rego".into(),
            text: text.into(),
            syntax: RegoSyntax::Auto,
        }],
        Duration::from_millis(300),
    );
    let b = match b {
        Ok(b) => b,
        Err(e) => {
            println!("LOAD ERR: {e}");
            return;
        }
    };
    let t = Instant::now();
    let r = b.evaluate(
        &b.packages()[0],
        regorus::Value::from(serde_json::json!({"review": {}})),
    );
    println!("{:?} -> {:?}", t.elapsed(), r);
}

#[test]
fn probe() {
    run("package a\nf(x) := f(x + 1)\ndeny contains \"x\" if f(1)\n");
    run("package a\nr if r\ndeny contains \"x\" if r\n");
    run(
        "package a\ndeny contains \"x\" if { n := count([x | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); x := i * j]); n > 0 }\n",
    );
    run("package a\ndeny contains \"x\" if { n := count(numbers.range(1, 10000000)); n > 0 }\n");
    run("package a\ndeny contains msg if { msg := sprintf(\"%v\", [1 / 0]) }\n");
    run("package a\ndeny contains msg if { x := to_number(\"abc\"); msg := \"y\" }\n");
    run("package a\nv := 1 if true\nv := 2 if true\ndeny contains \"x\" if v == 1\n");
    run("package a\ndeny contains \"x\" if { not_a_function(1) }\n");
    run("package a\ndeny contains x if { input.review.object.x == y }\n");
    run("package a\nviolation[{\"msg\": \"m\"}] { input.review }\nviolation := 5 { true }\n");
}
