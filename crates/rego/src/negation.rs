//! OPA's meaning of `not` around a call, applied to the source before regorus compiles it.
//!
//! OPA's compiler moves the references and calls inside a negated call out of the negation
//! (`not f(input.x)` runs as `__local0__ = input.x; not f(__local0__)`, the stages
//! RewriteExprTerms and RewriteDynamicTerms, open-policy-agent/opa#1877): when `input.x` is
//! undefined the whole rule body fails. regorus keeps them inside, so `not f(undefined)` is
//! true and the rule fires where under OPA it does not, e.g. a Gatekeeper policy
//! `not startswith(input.review.object.metadata.labels.owner, "team-")` would deny every
//! object without the label.
//!
//! So every negated literal whose expression is a call (a function, a comparison, arithmetic,
//! `in`) or a reference with a computed part, and that has such a term as an operand, is
//! rewritten in the source text into one literal that fails when an operand is undefined and
//! otherwise is the negation, as OPA evaluates it:
//!
//! ```text
//! not startswith(input.x, "team-")
//!   ->  count([1 | __portcullis_not_0 := input.x; not startswith(__portcullis_not_0, "team-")]) == 1
//! ```
//!
//! Operands that are moved: references (`input.x`, `c.name`), calls (`count(x)`), names of
//! rules, imports, `input` and `data`, and arrays, sets and objects holding any of these.
//! Local variables, constants and comprehensions stay (they are never undefined once bound).
//! Left as regorus evaluates them: negations carrying `with`, operands holding the wildcard `_`
//! (OPA's own rewrite would turn them into iteration), negations nested inside a rewritten one,
//! and `not x = y` unifications. The rewrite keeps every line where it was, so messages still
//! point at the written line.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value as Json;

/// The prefix of the variables the rewrite introduces.
pub const HOISTED: &str = "__portcullis_not_";

/// One module as parsed: its package (without `data.`) and AST (one entry of regorus'
/// `get_ast_as_json`).
pub struct Parsed<'a> {
    pub package: String,
    pub ast: &'a Json,
}

/// The names that refer to documents rather than local variables, per package: every rule
/// and function of the package, its imports, `input` and `data`.
pub fn global_names(modules: &[Parsed<'_>]) -> BTreeMap<String, BTreeSet<String>> {
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for module in modules {
        let entry = names.entry(module.package.clone()).or_default();
        entry.insert("input".into());
        entry.insert("data".into());
        let tree = &module.ast["ast"];
        for rule in tree["rules"].as_array().into_iter().flatten() {
            let head = &rule["Spec"]["head"];
            let refr = head
                .as_object()
                .and_then(|o| o.values().next())
                .map(|h| &h["refr"]);
            if let Some(name) = refr.and_then(head_name) {
                entry.insert(name);
            }
            // `default x := v` rules.
            if let Some(name) = head_name(&rule["Default"]["refr"]) {
                entry.insert(name);
            }
        }
        for import in tree["imports"].as_array().into_iter().flatten() {
            let contents = module.ast["source"]["contents"]
                .as_str()
                .unwrap_or_default();
            let alias = span(&import["as"])
                .and_then(|(s, e)| contents.get(s..e))
                .map(str::to_owned)
                .or_else(|| last_name(&import["refr"]));
            if let Some(alias) = alias {
                entry.insert(alias);
            }
        }
    }
    names
}

/// The first name of a rule head's reference (`violation` in `violation[msg]`).
fn head_name(refr: &Json) -> Option<String> {
    if let Some(var) = refr.get("Var") {
        return var["value"].as_str().map(str::to_owned);
    }
    for key in ["RefDot", "RefBrack"] {
        if let Some(inner) = refr.get(key) {
            return head_name(&inner["refr"]);
        }
    }
    None
}

/// The last name of an import's reference (`lib` in `data.x.lib`).
fn last_name(refr: &Json) -> Option<String> {
    if let Some(var) = refr.get("Var") {
        return var["value"].as_str().map(str::to_owned);
    }
    if let Some(dot) = refr.get("RefDot") {
        return dot["field"].get(1)?.as_str().map(str::to_owned);
    }
    if let Some(brack) = refr.get("RefBrack") {
        return brack["index"]["String"]["value"]
            .as_str()
            .map(str::to_owned);
    }
    None
}

/// regorus ends the span of a string literal before its closing quote, and so the span of an
/// expression that ends with one (`input.x == "a"`): take the quote in.
fn close_string(text: &str, start: usize, end: usize) -> usize {
    let Some(inside) = text.get(start..end) else {
        return end;
    };
    let mut in_string = false;
    let mut in_raw_string = false;
    let mut escaped = false;
    for c in inside.chars() {
        match c {
            '\\' if in_string && !escaped => {
                escaped = true;
                continue;
            }
            '"' if !escaped && !in_raw_string => in_string = !in_string,
            '`' if !in_string => in_raw_string = !in_raw_string,
            _ => {}
        }
        escaped = false;
    }
    let next = text.get(end..).and_then(|rest| rest.chars().next());
    match next {
        Some('"') if in_string => end + 1,
        Some('`') if in_raw_string => end + 1,
        _ => end,
    }
}

fn span(node: &Json) -> Option<(usize, usize)> {
    let start = usize::try_from(node["start"].as_u64()?).ok()?;
    let end = usize::try_from(node["end"].as_u64()?).ok()?;
    (start <= end).then_some((start, end))
}

/// The single variant of an expression node: (`"Call"`, its fields).
fn variant(expr: &Json) -> Option<(&str, &Json)> {
    let object = expr.as_object()?;
    if object.len() != 1 {
        return None;
    }
    object.iter().next().map(|(k, v)| (k.as_str(), v))
}

/// `text` with OPA's meaning of negated calls; `None` when nothing needed rewriting.
/// `globals` are the names that refer to documents in this module's package.
pub fn rewrite(text: &str, ast: &Json, globals: &BTreeSet<String>) -> Option<String> {
    let mut found = Vec::new();
    collect(&ast["ast"], globals, &mut found);
    for negation in &mut found {
        negation.end = close_string(text, negation.start, negation.end);
        for operand in &mut negation.operands {
            operand.1 = close_string(text, operand.0, operand.1);
        }
    }
    // Outermost first; a negation inside a rewritten one is left as it is.
    found.sort_by_key(|n: &Negation| (n.start, std::cmp::Reverse(n.end)));
    let mut kept: Vec<Negation> = Vec::new();
    for negation in found {
        if kept.last().is_some_and(|k| negation.start < k.end) {
            continue;
        }
        kept.push(negation);
    }
    if kept.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len() + kept.len() * 64);
    let mut at = 0;
    let mut counter = 0usize;
    for negation in &kept {
        let literal = text.get(negation.start..negation.end)?;
        if !literal.starts_with("not") {
            return None;
        }
        out.push_str(text.get(at..negation.start)?);
        let mut hoisted = String::new();
        let mut body = String::new();
        let mut cursor = negation.start;
        for &(start, end) in &negation.operands {
            let name = format!("{HOISTED}{counter}");
            counter += 1;
            body.push_str(text.get(cursor..start)?);
            body.push_str(&name);
            hoisted.push_str(&format!("{name} := {}; ", text.get(start..end)?));
            cursor = end;
        }
        body.push_str(text.get(cursor..negation.end)?);
        out.push_str(&format!("count([1 | {hoisted}{body}]) == 1"));
        at = negation.end;
    }
    out.push_str(text.get(at..)?);
    Some(out)
}

/// A negated literal to rewrite: its span and the spans of the operands to move out.
struct Negation {
    start: usize,
    end: usize,
    operands: Vec<(usize, usize)>,
}

fn collect(tree: &Json, globals: &BTreeSet<String>, found: &mut Vec<Negation>) {
    match tree {
        Json::Object(object) => {
            // A query statement: {"span", "literal": {"NotExpr": {...}}, "with_mods"?}.
            if let (Some(literal), None) = (object.get("literal"), object.get("with_mods"))
                && let Some(negated) = literal.get("NotExpr")
                && let Some(negation) = negation(negated, globals)
            {
                found.push(negation);
            }
            for value in object.values() {
                collect(value, globals, found);
            }
        }
        Json::Array(items) => {
            for item in items {
                collect(item, globals, found);
            }
        }
        _ => {}
    }
}

fn negation(negated: &Json, globals: &BTreeSet<String>) -> Option<Negation> {
    let (start, end) = span(&negated["span"])?;
    let (kind, fields) = variant(&negated["expr"])?;
    let mut candidates: Vec<&Json> = Vec::new();
    match kind {
        "Call" => candidates.extend(fields["params"].as_array().into_iter().flatten()),
        "BoolExpr" | "ArithExpr" | "BinExpr" => {
            candidates.push(&fields["lhs"]);
            candidates.push(&fields["rhs"]);
        }
        "Membership" => {
            if !fields["key"].is_null() {
                candidates.push(&fields["key"]);
            }
            candidates.push(&fields["value"]);
            candidates.push(&fields["collection"]);
        }
        "RefDot" | "RefBrack" => ref_operands(&negated["expr"], globals, &mut candidates),
        _ => return None,
    }
    let mut operands = Vec::new();
    for operand in candidates {
        if may_be_undefined(operand, globals) && !has_wildcard(operand) {
            let (_, fields) = variant(operand)?;
            let range = span(&fields["span"])?;
            if range.0 < start || range.1 > end {
                return None;
            }
            operands.push(range);
        }
    }
    if operands.is_empty() {
        return None;
    }
    operands.sort_unstable();
    // Overlapping operands cannot be moved apart: leave the literal alone.
    if operands.windows(2).any(|w| w[0].1 > w[1].0) {
        return None;
    }
    Some(Negation {
        start,
        end,
        operands,
    })
}

/// The parts of a negated reference OPA evaluates first: a call it starts from
/// (`f(x).y`) and computed indices (`obj[input.key]`).
fn ref_operands<'a>(expr: &'a Json, globals: &BTreeSet<String>, out: &mut Vec<&'a Json>) {
    match variant(expr) {
        Some(("RefDot", fields)) => ref_operands(&fields["refr"], globals, out),
        Some(("RefBrack", fields)) => {
            let index = &fields["index"];
            if !matches!(variant(index), Some(("Var", _))) && may_be_undefined(index, globals) {
                out.push(index);
            }
            ref_operands(&fields["refr"], globals, out);
        }
        Some(("Call", _)) => out.push(expr),
        _ => {}
    }
}

/// Whether OPA would move `expr` out of a negation: a reference, a call, a document name, or
/// a collection holding one.
fn may_be_undefined(expr: &Json, globals: &BTreeSet<String>) -> bool {
    match variant(expr) {
        Some(("RefDot" | "RefBrack" | "Call", _)) => true,
        Some(("Var", fields)) => fields["value"]
            .as_str()
            .is_some_and(|name| globals.contains(name)),
        Some(("Array" | "Set", fields)) => fields["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|item| may_be_undefined(item, globals)),
        Some(("Object", fields)) => {
            fields["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|field| {
                    field.as_array().is_some_and(|parts| {
                        parts
                            .iter()
                            .skip(1)
                            .any(|part| may_be_undefined(part, globals))
                    })
                })
        }
        Some(("UnaryExpr" | "ArithExpr" | "BinExpr" | "BoolExpr" | "Membership", _)) => true,
        _ => false,
    }
}

fn has_wildcard(tree: &Json) -> bool {
    match tree {
        Json::Object(object) => {
            if let Some(var) = object.get("Var")
                && var["value"].as_str() == Some("_")
            {
                return true;
            }
            object.values().any(has_wildcard)
        }
        Json::Array(items) => items.iter().any(has_wildcard),
        _ => false,
    }
}
