//! `${VAR}` / `${VAR:-default}` expansion in the config text, with `$$` for a literal `$`.
//!
//! It runs on the raw text before YAML parsing, so error positions stay right. Only names of
//! the environment-variable form (`[A-Za-z_][A-Za-z0-9_]*`) are expanded: `${1}`, a relabel
//! group reference, is left alone, and `$1` is never touched. An unset variable without a
//! default is an error that names it; a relabel template using a named group `${host}` hits
//! that error and is told to write `$${host}`.

/// Where the YAML comment of `line` starts (a `#` at the start or after a space or tab,
/// outside quotes), if it has one.
fn comment_start(line: &str) -> Option<usize> {
    let (mut single, mut double) = (false, false);
    let mut prev = b' ';
    for (i, b) in line.bytes().enumerate() {
        match b {
            b'\'' if !double => single = !single,
            b'"' if !single && prev != b'\\' => double = !double,
            b'#' if !single && !double && (prev == b' ' || prev == b'\t' || i == 0) => return Some(i),
            _ => {}
        }
        prev = b;
    }
    None
}

/// Expands `text` line by line, leaving comments alone. Errors name the line.
pub fn expand(text: &str, get: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line).unwrap_or(line.len()));
        out.push_str(&expand_line(code, &get).map_err(|e| format!("line {}: {e}", n + 1))?);
        out.push_str(comment);
    }
    Ok(out)
}

fn expand_line(text: &str, get: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if rest.starts_with("$$") {
            out.push('$');
            rest = &rest[2..];
            continue;
        }
        let Some(body) = rest.strip_prefix("${") else {
            out.push('$');
            rest = &rest[1..];
            continue;
        };
        let name_len = body
            .char_indices()
            .take_while(|&(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()))
            .count();
        let after = &body[name_len..];
        let (default, consumed) = if let Some(d) = after.strip_prefix(":-") {
            match d.find('}') {
                Some(end) => (Some(&d[..end]), 2 + name_len + 2 + end + 1),
                None => return Err(format!("unterminated ${{{}:-…", &body[..name_len])),
            }
        } else if after.starts_with('}') {
            (None, 2 + name_len + 1)
        } else {
            (None, 0)
        };
        if name_len == 0 || consumed == 0 {
            // Not a variable reference (e.g. `${1}`): keep it as written.
            out.push('$');
            rest = &rest[1..];
            continue;
        }
        let name = &body[..name_len];
        match (get(name), default) {
            (Some(v), _) if !v.is_empty() || default.is_none() => out.push_str(&v),
            (_, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (write $${{{name}}} for a literal ${{{name}}}, \
                     or ${{{name}:-default}}, or run with --no-config.expand-env)"
                ));
            }
            (Some(v), None) => out.push_str(&v),
        }
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "NODE_NAME" => Some("node-1".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_rules() {
        assert_eq!(expand("field: spec.nodeName=${NODE_NAME}", env).unwrap(), "field: spec.nodeName=node-1");
        assert_eq!(expand("a: ${MISSING:-x}", env).unwrap(), "a: x");
        assert_eq!(expand("a: ${EMPTY:-x}", env).unwrap(), "a: x", ":- also covers empty, like the shell");
        assert_eq!(expand("a: ${EMPTY}", env).unwrap(), "a: ");
        assert_eq!(expand("price: $$5 and $$$${NODE_NAME}", env).unwrap(), "price: $5 and $${NODE_NAME}");
        // Relabel templates survive.
        assert_eq!(expand("replacement: '$1:${1}' x: $", env).unwrap(), "replacement: '$1:${1}' x: $");
        let e = expand("a: 1\nb: ${host}\n", env).unwrap_err();
        assert!(e.starts_with("line 2:") && e.contains("$${host}"), "{e}");
        assert!(expand("a: ${X:-", env).is_err());
        // Comments are not expanded; a '#' inside a value or quotes is not a comment.
        assert_eq!(
            expand("# use ${VAR} here\na: 1 # ${X}\n", env).unwrap(),
            "# use ${VAR} here\na: 1 # ${X}\n"
        );
        assert_eq!(
            expand("a: 'x # ${NODE_NAME}'\nb: c#${NODE_NAME}\n", env).unwrap(),
            "a: 'x # node-1'\nb: c#node-1\n"
        );
    }
}
