//! Just enough PromQL lexing to list the metric names, label names and functions a query uses.
//!
//! Not a parser: it skips string literals, `[...]` ranges and Grafana `$variables`, reads label
//! names out of `{...}` matchers and `by (...)`-style lists, and calls every other identifier a
//! metric unless it is a keyword or a known function. Unknown functions are errors, so a typo
//! cannot hide as a function call.

use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub struct Names {
    pub metrics: BTreeSet<String>,
    pub labels: BTreeSet<String>,
}

/// Keywords followed by a parenthesized list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
/// Binary operators and modifiers spelled as words.
const WORD_OPERATORS: &[&str] = &["and", "or", "unless", "bool", "offset", "atan2"];
/// Aggregations and functions of PromQL (prometheus/promql/parser/functions.go and the aggregators).
const FUNCTIONS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "group",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "time",
    "timestamp",
    "vector",
    "year",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> Result<usize, String> {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!("unterminated string at {start}"))
}

/// Index of the bracket closing the one at `open`, skipping strings and nested pairs.
fn closing(chars: &[char], open: usize) -> Result<usize, String> {
    let (left, right) = match chars[open] {
        '(' => ('(', ')'),
        '{' => ('{', '}'),
        '[' => ('[', ']'),
        other => return Err(format!("{other:?} at {open} is not an opening bracket")),
    };
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i)?;
                continue;
            }
            c if c == left => depth += 1,
            c if c == right => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(format!("unbalanced {left:?} at {open}"))
}

fn skip_spaces(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Label names of `name op "value", ...` (the inside of `{...}`).
fn matchers(chars: &[char], out: &mut Names) -> Result<(), String> {
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => i = skip_string(chars, i)?,
            c if is_ident_start(c) => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let after = skip_spaces(chars, i);
                if !matches!(chars.get(after), Some('=' | '!')) {
                    return Err(format!("label {:?} without a matcher", chars[start..i].iter().collect::<String>()));
                }
                out.labels.insert(chars[start..i].iter().collect());
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Label names of `a, b, c` (the inside of `by (...)`).
fn label_list(chars: &[char], out: &mut Names) -> Result<(), String> {
    let text: String = chars.iter().collect();
    for label in text.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        if !label.chars().next().is_some_and(is_ident_start) || !label.chars().all(is_ident_char) {
            return Err(format!("{label:?} is not a label name"));
        }
        out.labels.insert(label.to_string());
    }
    Ok(())
}

/// The metrics and labels `expr` names.
pub fn names(expr: &str) -> Result<Names, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Names::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i)?;
        } else if c == '{' {
            let end = closing(&chars, i)?;
            matchers(&chars[i + 1..end], &mut out)?;
            i = end + 1;
        } else if c == '[' {
            i = closing(&chars, i)? + 1;
        } else if c == '$' {
            // A Grafana variable: $name or ${name}.
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = closing(&chars, i)? + 1;
            } else {
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // Numbers and durations (0.95, 1e3, 5m).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_spaces(&chars, i);
            if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                if chars.get(next) == Some(&'(') {
                    let end = closing(&chars, next)?;
                    label_list(&chars[next + 1..end], &mut out)?;
                    i = end + 1;
                }
            } else if WORD_OPERATORS.contains(&word.as_str()) || FUNCTIONS.contains(&word.as_str()) {
                // Operators and calls name no series themselves; their arguments are read next.
            } else if chars.get(next) == Some(&'(') {
                return Err(format!("unknown function {word:?}"));
            } else {
                out.metrics.insert(word);
            }
        } else {
            i += 1;
        }
    }
    Ok(out)
}

/// A Grafana `label_values(selector, label)` variable query as (selector, label).
pub fn label_values(query: &str) -> Result<(&str, &str), String> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| format!("{query:?} is not label_values(selector, label)"))?;
    let (selector, label) =
        inner.rsplit_once(',').ok_or_else(|| format!("{query:?}: label_values needs a selector and a label"))?;
    Ok((selector.trim(), label.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_of_a_quantile_over_a_rate() {
        let n = names(
            r#"histogram_quantile(0.95, sum by (le, revision) (rate(infergate_ttft_bucket{namespace=~"$ns", status!="4{2}"}[$__rate_interval])))"#,
        )
        .unwrap();
        assert_eq!(n.metrics, set(&["infergate_ttft_bucket"]));
        assert_eq!(n.labels, set(&["le", "revision", "namespace", "status"]));
    }

    #[test]
    fn ratios_offsets_and_word_operators() {
        let n = names("sum(rate(a_total[5m] offset 1h)) / on (job) group_left (x) sum(b) > bool 0 and c").unwrap();
        assert_eq!(n.metrics, set(&["a_total", "b", "c"]));
        assert_eq!(n.labels, set(&["job", "x"]));
    }

    #[test]
    fn typos_and_broken_queries_are_errors() {
        assert!(names("rat(x[5m])").unwrap_err().contains("unknown function"));
        assert!(names("sum(x{a=\"b\"").is_err());
        assert!(names("x{a}").is_err());
        assert!(names("sum by (le-x) (y)").is_err());
    }

    #[test]
    fn label_values_queries_split_into_selector_and_label() {
        assert_eq!(label_values(r#"label_values(m{a=~"$a, b"}, name)"#).unwrap(), (r#"m{a=~"$a, b"}"#, "name"));
        assert!(label_values("query_result(up)").is_err());
    }
}
