//! The document template: prose with `{{name arg ...}}` placeholders that the generator fills
//! with sections computed from the run. Keeping the prose in a template lets the narrative be
//! edited without touching code, while every number still comes from the run.

use crate::error::{Error, Result};

/// Replaces every `{{name arg ...}}` of `template` by `resolve(name, args)`.
pub fn fill(template: &str, mut resolve: impl FnMut(&str, &[&str]) -> Result<String>) -> Result<String> {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let line = || template[..template.len() - rest.len() + start].matches('\n').count() + 1;
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| Error::Template(format!("line {}: `{{{{` without `}}}}`", line())))?;
        let mut words = after[..end].split_whitespace();
        let name = words.next().ok_or_else(|| Error::Template(format!("line {}: empty placeholder", line())))?;
        let args: Vec<&str> = words.collect();
        let text = resolve(name, &args).map_err(|e| match e {
            Error::Template(m) => Error::Template(format!("line {}: {m}", line())),
            other => other,
        })?;
        out.push_str(&text);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo(name: &str, args: &[&str]) -> Result<String> {
        match name {
            "bad" => Err(Error::Template("unknown".into())),
            _ => Ok(format!("<{name}:{}>", args.join(","))),
        }
    }

    #[test]
    fn fills_placeholders_with_arguments() {
        let out = fill("a {{x}} b {{ delta  seed  one two }}{{y}}\n", echo).unwrap();
        assert_eq!(out, "a <x:> b <delta:seed,one,two><y:>\n");
        assert_eq!(fill("no placeholders", echo).unwrap(), "no placeholders");
    }

    #[test]
    fn errors_name_the_line() {
        let err = fill("one\ntwo {{bad}}\n", echo).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("unknown"), "{err}");
        let err = fill("x\ny\n{{open", echo).unwrap_err().to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(fill("{{ }}", echo).is_err());
    }
}
