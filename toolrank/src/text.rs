//! Words of a tool or a need: split, lower-cased, stop words dropped; stemmed for BM25, kept
//! whole for the word vectors (which have their own table of forms).

/// Words that carry no capability.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "for", "from", "get", "has", "i",
    "in", "into", "is", "it", "its", "me", "my", "need", "of", "on", "or", "some", "that", "the",
    "this", "to", "tool", "use", "want", "what", "which", "will", "with", "you", "your",
];

/// Lower-cased words of `text` without stop words; splits camelCase, snake_case, kebab-case
/// and dots.
pub fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            // camelCase boundary: "readGraph" -> "read", "graph".
            if c.is_uppercase() && prev_lower && !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev_lower = c.is_lowercase() || c.is_ascii_digit();
            current.extend(c.to_lowercase());
        } else {
            prev_lower = false;
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words.retain(|w| !STOPWORDS.contains(&w.as_str()));
    words
}

/// Stemmed words of `text`: the terms BM25 counts.
pub fn tokens(text: &str) -> Vec<String> {
    words(text)
        .iter()
        .map(|w| stem(w))
        .filter(|w| !w.is_empty())
        .collect()
}

/// A light suffix stemmer: enough to meet "sums" with "sum" and "echoes" with "echo".
pub fn stem(word: &str) -> String {
    let w = word;
    if w.len() <= 3 {
        return w.to_owned();
    }
    for (suffix, keep) in [
        ("ations", "ate"),
        ("ation", "ate"),
        ("ies", "y"),
        ("ing", ""),
        ("es", ""),
        ("ed", ""),
        ("ly", ""),
        ("s", ""),
    ] {
        if let Some(base) = w.strip_suffix(suffix) {
            if base.len() >= 3 && !(suffix == "s" && (base.ends_with('s') || base.ends_with('u'))) {
                // "echoes" -> "echo", but "files" -> "fil" is wrong: only strip "es" after s, x, o, ch, sh.
                if suffix == "es"
                    && !(base.ends_with('s')
                        || base.ends_with('x')
                        || base.ends_with('o')
                        || base.ends_with("ch")
                        || base.ends_with("sh"))
                {
                    return format!("{base}e");
                }
                let mut out = format!("{base}{keep}");
                // "running" -> "runn" -> "run".
                if suffix == "ing" || suffix == "ed" {
                    let b = out.as_bytes();
                    if b.len() >= 2
                        && b[b.len() - 1] == b[b.len() - 2]
                        && !matches!(b[b.len() - 1], b'l' | b's' | b'z')
                    {
                        out.pop();
                    }
                }
                return out;
            }
        }
    }
    w.to_owned()
}

/// The forms the word-vector table may hold `word` under when it lacks the word itself: the
/// table leaves out inflections whose base it has (bench/semantic/distill.py, `bases`).
pub fn base_forms(word: &str) -> impl Iterator<Item = String> + '_ {
    [
        ("ies", "y"),
        ("es", ""),
        ("s", ""),
        ("ed", ""),
        ("ed", "e"),
        ("ing", ""),
        ("ing", "e"),
        ("ly", ""),
    ]
    .into_iter()
    .filter_map(move |(suffix, repl)| {
        let base = word.strip_suffix(suffix)?;
        (base.len() >= 3).then(|| format!("{base}{repl}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_and_stem() {
        assert_eq!(
            tokens("readGraph create_entities get-sum"),
            vec!["read", "graph", "create", "entity", "sum"]
        );
        assert_eq!(
            tokens("Echoes the files, running sums"),
            vec!["echo", "file", "run", "sum"]
        );
    }

    #[test]
    fn base_forms_undo_inflections() {
        let forms: Vec<String> = base_forms("directories").collect();
        assert!(forms.contains(&"directory".to_owned()));
        let forms: Vec<String> = base_forms("listing").collect();
        assert!(forms.contains(&"list".to_owned()));
        assert_eq!(base_forms("cat").count(), 0);
    }
}
