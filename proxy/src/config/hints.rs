//! Help appended to the TOML parser's messages: which table an unknown name is in, the nearest
//! known name, and which field a wrongly typed value belongs to, with an example.

/// The table header (`[proxy]`, `[[servers]]`) in force at byte `offset`, or `None` when the
/// name at `offset` is itself a table header (a top-level name).
pub(super) fn section_at(text: &str, offset: usize) -> Option<&str> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    if before[line_start..].trim_start().starts_with('[') {
        return None;
    }
    let line = before[..line_start]
        .lines()
        .rev()
        .map(str::trim_start)
        .find(|l| l.starts_with('['))?;
    // Cut after the header's own closing brackets, dropping any trailing comment.
    let end = if line.starts_with("[[") {
        line.find("]]").map(|i| i + 2)
    } else {
        line.find(']').map(|i| i + 1)
    };
    Some(&line[..end.unwrap_or(line.len())])
}

/// Rewrites an `unknown field` message: names the table it is in (or calls a top-level name a
/// table) and suggests the nearest expected name.
pub(super) fn unknown_field(message: &str, text: &str, offset: Option<usize>) -> String {
    let header = offset.is_some_and(|o| {
        let before = text.get(..o).unwrap_or("");
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        before[line_start..].trim_start().starts_with('[')
    });
    let mut out = if header {
        message.replacen("unknown field", "unknown table", 1)
    } else {
        match offset.and_then(|o| section_at(text, o)) {
            Some(section) => message.replacen(',', &format!(" in {section},"), 1),
            None => message.to_owned(),
        }
    };
    if let Some(near) = nearest(message) {
        out.push_str(&format!("; did you mean `{near}`?"));
    }
    out
}

/// The expected name closest to the unknown one, when it is a plausible typo.
fn nearest(message: &str) -> Option<&str> {
    let mut names = message.split('`').skip(1).step_by(2);
    let unknown = names.next()?;
    names
        .map(|n| (distance(unknown, n), n))
        .filter(|&(d, n)| d > 0 && d <= 2.max(n.len() / 4))
        .min_by_key(|&(d, _)| d)
        .map(|(_, n)| n)
}

/// Levenshtein distance in characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Names the field of an `invalid type` message (the key on the value's line) and shows a
/// value of the expected type.
pub(super) fn invalid_type(message: &str, text: &str, offset: Option<usize>) -> String {
    let Some(offset) = offset else {
        return message.to_owned();
    };
    let before = text.get(..offset).unwrap_or("");
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let Some((key, _)) = before[line_start..].split_once('=') else {
        return message.to_owned();
    };
    let key = key.trim();
    let expected = message.rsplit("expected ").next().unwrap_or("");
    let example = match expected.trim() {
        "usize" | "u64" | "u32" | "u16" | "u8" | "i64" | "i32" | "an integer" => "2",
        "a boolean" | "bool" => "true",
        "a string" => "\"...\"",
        "a sequence" => "[\"...\"]",
        _ => "",
    };
    let field = match section_at(text, offset) {
        Some(section) => format!("`{key}` in {section}"),
        None => format!("`{key}`"),
    };
    if example.is_empty() {
        format!("{message} for {field}")
    } else {
        format!("{message} for {field}; write e.g. {key} = {example}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_level_unknown_name_is_a_table() {
        let text = "[server]\nname = \"a\"\n";
        let m = unknown_field(
            "unknown field `server`, expected one of `proxy`, `servers`",
            text,
            Some(1),
        );
        assert!(m.starts_with("unknown table `server`, expected"), "{m}");
        assert!(m.ends_with("did you mean `servers`?"), "{m}");
    }

    #[test]
    fn a_near_miss_gets_a_suggestion() {
        let text = "[[servers]]\nname = \"a\"\ntimout = \"5s\"\n";
        let m = unknown_field(
            "unknown field `timout`, expected one of `name`, `url`, `timeout`",
            text,
            text.find("timout"),
        );
        assert!(m.contains("in [[servers]],"), "{m}");
        assert!(m.ends_with("did you mean `timeout`?"), "{m}");
        let far = unknown_field(
            "unknown field `colour`, expected one of `name`, `url`",
            text,
            None,
        );
        assert!(!far.contains("did you mean"), "{far}");
    }

    #[test]
    fn a_type_error_names_the_field_and_an_example() {
        let text = "[proxy]\nshards = \"two\"\n";
        let m = invalid_type(
            "invalid type: string \"two\", expected usize",
            text,
            text.find("\"two\""),
        );
        assert!(m.contains("for `shards` in [proxy]"), "{m}");
        assert!(m.ends_with("write e.g. shards = 2"), "{m}");
    }
}
