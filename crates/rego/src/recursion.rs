//! A load-time check that no Rego function calls itself, directly or through other functions.
//!
//! OPA rejects recursion when it compiles policies; regorus detects recursive *rules* at run
//! time but not recursive *functions*, which would recurse until the thread's stack overflows
//! and the process aborts (a panic could be caught, an overflow cannot). So portcullis refuses
//! such modules when they load, with the functions involved and where they are defined.
//! Only static calls are followed (`f(x)`, `data.pkg.f(x)`, imported aliases); a call through
//! a computed reference cannot be resolved here and is not followed.

use std::collections::BTreeMap;

use serde_json::Value as Json;

/// Where a function is defined, for the error message.
#[derive(Debug, Clone)]
struct Definition {
    file: String,
    line: u64,
    calls: Vec<String>,
}

/// `Err(message)` naming the first cycle found in the functions of `ast` (regorus'
/// `get_ast_as_json` output: one entry per module).
pub fn check(ast: &Json) -> Result<(), String> {
    let mut functions: BTreeMap<String, Definition> = BTreeMap::new();
    for module in ast.as_array().map(Vec::as_slice).unwrap_or_default() {
        let file = module["source"]["file"].as_str().unwrap_or_default();
        let contents = module["source"]["contents"].as_str().unwrap_or_default();
        let tree = &module["ast"];
        let package = ref_path(&tree["package"]["refr"])
            .unwrap_or_default()
            .join(".");
        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for import in tree["imports"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(path) = ref_path(&import["refr"]) else {
                continue;
            };
            if path.first().map(String::as_str) != Some("data") {
                continue;
            }
            let alias = span_text(contents, &import["as"])
                .or_else(|| path.last().cloned())
                .unwrap_or_default();
            aliases.insert(alias, path.get(1..).unwrap_or_default().to_vec());
        }
        for rule in tree["rules"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let head = &rule["Spec"]["head"]["Func"];
            let Some(name) = ref_path(&head["refr"]) else {
                continue;
            };
            let mut calls = Vec::new();
            collect_calls(&rule["Spec"], &mut calls);
            let calls = calls
                .into_iter()
                .map(|call| resolve(&package, &aliases, call))
                .collect();
            let key = format!("{package}.{}", name.join("."));
            let line = head["refr"]
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(|v| v["span"]["line"].as_u64())
                .unwrap_or(0);
            let entry = functions.entry(key).or_insert_with(|| Definition {
                file: file.to_owned(),
                line,
                calls: Vec::new(),
            });
            entry.calls.extend::<Vec<String>>(calls);
        }
    }
    // Depth-first search with colours: grey on the stack, black done.
    let mut colour: BTreeMap<&str, u8> = BTreeMap::new();
    for start in functions.keys() {
        let mut stack: Vec<(&str, usize)> = vec![(start.as_str(), 0)];
        if colour.contains_key(start.as_str()) {
            continue;
        }
        colour.insert(start.as_str(), 1);
        while let Some((node, next)) = stack.pop() {
            let callees = functions
                .get(node)
                .map(|d| d.calls.as_slice())
                .unwrap_or_default();
            let Some(callee) = callees.get(next) else {
                colour.insert(node, 2);
                continue;
            };
            stack.push((node, next + 1));
            let Some((callee, _)) = functions.get_key_value(callee.as_str()) else {
                continue; // a built-in, or a function that is not ours
            };
            match colour.get(callee.as_str()) {
                Some(1) => {
                    let mut cycle: Vec<&str> = stack.iter().map(|(n, _)| *n).collect();
                    if let Some(at) = cycle.iter().position(|n| *n == callee.as_str()) {
                        cycle.drain(..at);
                    }
                    cycle.push(callee.as_str());
                    let where_ = functions
                        .get(callee.as_str())
                        .map(|d| format!("{}:{}", d.file, d.line))
                        .unwrap_or_default();
                    return Err(format!(
                        "{where_}: recursive function: {} (Rego forbids recursion; it would \
                         never finish)",
                        cycle.join(" -> ")
                    ));
                }
                Some(_) => {}
                None => {
                    colour.insert(callee.as_str(), 1);
                    stack.push((callee.as_str(), 0));
                }
            }
        }
    }
    Ok(())
}

/// `a.b["c"]` as `["a", "b", "c"]`; `None` for anything computed.
fn ref_path(expr: &Json) -> Option<Vec<String>> {
    if let Some(var) = expr.get("Var") {
        return Some(vec![var["value"].as_str()?.to_owned()]);
    }
    if let Some(dot) = expr.get("RefDot") {
        let mut path = ref_path(&dot["refr"])?;
        path.push(dot["field"].get(1)?.as_str()?.to_owned());
        return Some(path);
    }
    if let Some(brack) = expr.get("RefBrack") {
        let mut path = ref_path(&brack["refr"])?;
        path.push(brack["index"]["String"]["value"].as_str()?.to_owned());
        return Some(path);
    }
    None
}

fn span_text(contents: &str, span: &Json) -> Option<String> {
    let start = usize::try_from(span["start"].as_u64()?).ok()?;
    let end = usize::try_from(span["end"].as_u64()?).ok()?;
    contents.get(start..end).map(str::to_owned)
}

fn collect_calls(tree: &Json, calls: &mut Vec<Vec<String>>) {
    match tree {
        Json::Object(object) => {
            if let Some(call) = object.get("Call")
                && let Some(path) = ref_path(&call["fcn"])
            {
                calls.push(path);
            }
            for value in object.values() {
                collect_calls(value, calls);
            }
        }
        Json::Array(items) => {
            for item in items {
                collect_calls(item, calls);
            }
        }
        _ => {}
    }
}

/// A call's target as `package.function`.
fn resolve(package: &str, aliases: &BTreeMap<String, Vec<String>>, call: Vec<String>) -> String {
    match call.first().map(String::as_str) {
        Some("data") => call.get(1..).unwrap_or_default().join("."),
        Some(first) if aliases.contains_key(first) => {
            let mut path = aliases.get(first).cloned().unwrap_or_default();
            path.extend(call.get(1..).unwrap_or_default().iter().cloned());
            path.join(".")
        }
        _ => format!("{package}.{}", call.join(".")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ast(files: &[(&str, &str)]) -> Json {
        let mut engine = regorus::Engine::new();
        for (path, text) in files {
            engine
                .add_policy((*path).into(), (*text).into())
                .unwrap_or_default();
        }
        serde_json::from_str(&engine.get_ast_as_json().unwrap_or_default()).unwrap_or_default()
    }

    #[test]
    fn a_function_calling_itself_is_refused_with_its_place() {
        let err = check(&ast(&[("p.rego", "package a\n\nf(x) := f(x + 1)\n")]));
        let err = err.err().unwrap_or_default();
        assert!(
            err.starts_with("p.rego:3: recursive function: a.f -> a.f"),
            "{err}"
        );
    }

    #[test]
    fn mutual_recursion_across_packages_and_aliases_is_refused() {
        let err = check(&ast(&[
            (
                "a.rego",
                "package a\nimport data.lib as l\nf(x) := y if { y := l.g(x) }\n",
            ),
            ("lib.rego", "package lib\ng(x) := data.a.f(x)\n"),
        ]));
        let err = err.err().unwrap_or_default();
        assert!(err.contains("recursive function"), "{err}");
        assert!(err.contains("a.f") && err.contains("lib.g"), "{err}");
    }

    #[test]
    fn ordinary_helpers_and_builtins_pass() {
        let ok = check(&ast(&[(
            "p.rego",
            "package a\nf(x) := g(x) + count([1])\ng(x) := x * 2\nh(x) := f(g(x))\n",
        )]));
        assert_eq!(ok, Ok(()));
    }
}
