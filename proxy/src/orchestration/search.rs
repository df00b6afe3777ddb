//! Capability search: BM25 over every upstream tool, so an agent finds a tool by its need.
//!
//! A tool's document is its exposed name (split into words), title, description, parameter
//! names and descriptions, its server's name and the server's configured tags. Name words and
//! tags count three times: a word in the name says more about what a tool does than the same
//! word in a long description. Words are lower-cased and lightly stemmed ("sums", "summing"
//! -> "sum") so a plain-language need meets a terse schema halfway.

use std::collections::HashMap;

use simd_json::prelude::*;

use super::Json;

/// BM25 term-frequency saturation.
const K1: f64 = 1.2;
/// BM25 length normalisation.
const B: f64 = 0.75;
/// How many times name words and tags count.
const NAME_WEIGHT: usize = 3;

/// Words that carry no capability.
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "for", "from", "get", "has", "i",
    "in", "into", "is", "it", "its", "me", "my", "need", "of", "on", "or", "some", "that", "the",
    "this", "to", "tool", "use", "want", "what", "which", "will", "with", "you", "your",
];

/// Everyday words for what tool schemas name with another word; a query gets both. Kept to
/// verbs and nouns whose meaning does not depend on the tool ("remove" is always "delete").
const SYNONYMS: &[(&str, &str)] = &[
    ("remove", "delete"),
    ("erase", "delete"),
    ("drop", "delete"),
    ("make", "create"),
    ("build", "create"),
    ("generate", "create"),
    ("folder", "directory"),
    ("lookup", "search"),
    ("locate", "find"),
];

/// One tool as the index knows it.
#[derive(Clone, Debug)]
pub struct Doc {
    /// Exposed name.
    pub name: String,
    /// Index of its server.
    pub server: usize,
    /// The tool's JSON as listed (exposed name in place).
    pub json: Json,
}

/// A BM25 index over the tools of one catalog generation.
#[derive(Debug, Default)]
pub struct Index {
    /// The catalog generation indexed.
    pub generation: u64,
    docs: Vec<Doc>,
    /// Term frequencies per document.
    terms: Vec<HashMap<String, usize>>,
    lengths: Vec<usize>,
    /// Documents containing each term.
    df: HashMap<String, usize>,
    avg_len: f64,
}

/// A ranked tool.
#[derive(Clone, Debug)]
pub struct Hit<'i> {
    /// The tool.
    pub doc: &'i Doc,
    /// Its BM25 score (higher is better).
    pub score: f64,
}

impl Index {
    /// Indexes `tools`: (server, server name, tags, tool JSON).
    pub fn build<'a>(
        generation: u64,
        tools: impl IntoIterator<Item = (usize, &'a str, &'a [String], Json)>,
    ) -> Index {
        let mut index = Index {
            generation,
            ..Index::default()
        };
        for (server, server_name, tags, json) in tools {
            let Some(name) = json.get_str("name").map(str::to_owned) else {
                continue;
            };
            let mut words = Vec::new();
            for _ in 0..NAME_WEIGHT {
                words.extend(tokens(&name));
                for t in tags {
                    words.extend(tokens(t));
                }
            }
            words.extend(tokens(server_name));
            for field in ["title", "description"] {
                if let Some(text) = json.get_str(field) {
                    words.extend(tokens(text));
                }
            }
            if let Some(props) = json
                .get("inputSchema")
                .and_then(|s| s.get("properties"))
                .and_then(|p| p.as_object())
            {
                for (param, schema) in props.iter() {
                    words.extend(tokens(param));
                    if let Some(d) = schema.get_str("description") {
                        words.extend(tokens(d));
                    }
                }
            }
            let mut tf: HashMap<String, usize> = HashMap::new();
            for w in &words {
                *tf.entry(w.clone()).or_default() += 1;
            }
            for term in tf.keys() {
                *index.df.entry(term.clone()).or_default() += 1;
            }
            index.lengths.push(words.len());
            index.terms.push(tf);
            index.docs.push(Doc { name, server, json });
        }
        let total: usize = index.lengths.iter().sum();
        index.avg_len = if index.docs.is_empty() {
            1.0
        } else {
            (total as f64 / index.docs.len() as f64).max(1.0)
        };
        index
    }

    /// Number of tools indexed.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// True when no tool is indexed.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// The `k` best tools for `query` with a positive score, best first; `keep` filters.
    pub fn search(&self, query: &str, k: usize, keep: impl Fn(&Doc) -> bool) -> Vec<Hit<'_>> {
        let mut query_terms = tokens(query);
        let extra: Vec<String> = query_terms
            .iter()
            .filter_map(|t| SYNONYMS.iter().find(|(w, _)| w == t).map(|(_, s)| stem(s)))
            .collect();
        query_terms.extend(extra);
        query_terms.sort();
        query_terms.dedup();
        let n = self.docs.len() as f64;
        let mut hits: Vec<Hit<'_>> = Vec::new();
        for (i, doc) in self.docs.iter().enumerate() {
            if !keep(doc) {
                continue;
            }
            let mut score = 0.0;
            for term in &query_terms {
                let Some(&tf) = self.terms[i].get(term) else {
                    continue;
                };
                let df = self.df.get(term).copied().unwrap_or(0) as f64;
                let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                let tf = tf as f64;
                let norm = K1 * (1.0 - B + B * self.lengths[i] as f64 / self.avg_len);
                score += idf * tf * (K1 + 1.0) / (tf + norm);
            }
            if score > 0.0 {
                hits.push(Hit { doc, score });
            }
        }
        // Ties go to the shorter name: the more specific tool usually has the plainer name.
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.doc.name.len().cmp(&b.doc.name.len()))
                .then_with(|| a.doc.name.cmp(&b.doc.name))
        });
        hits.truncate(k);
        hits
    }
}

/// Lower-cased, stemmed words of `text`; splits camelCase, snake_case, kebab-case and dots.
pub fn tokens(text: &str) -> Vec<String> {
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
    words
        .into_iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .filter(|w| !w.is_empty())
        .collect()
}

/// A light suffix stemmer: enough to meet "sums" with "sum" and "echoes" with "echo".
fn stem(word: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use simd_json::json;

    fn index() -> Index {
        let tools = vec![
            (
                0,
                "everything",
                vec![],
                json!({"name": "everything__get-sum", "description": "Returns the sum of two numbers",
                "inputSchema": {"properties": {"a": {"description": "First number"}, "b": {"description": "Second number"}}}}),
            ),
            (
                0,
                "everything",
                vec![],
                json!({"name": "everything__echo", "description": "Echoes back the input string",
                "inputSchema": {"properties": {"message": {"description": "Message to echo"}}}}),
            ),
            (
                1,
                "memory",
                vec!["knowledge".to_owned()],
                json!({"name": "memory__create_entities", "description": "Create multiple new entities in the knowledge graph",
                "inputSchema": {"properties": {"entities": {"type": "array"}}}}),
            ),
            (
                1,
                "memory",
                vec!["knowledge".to_owned()],
                json!({"name": "memory__read_graph", "description": "Read the entire knowledge graph"}),
            ),
            (
                1,
                "memory",
                vec!["knowledge".to_owned()],
                json!({"name": "memory__search_nodes", "description": "Search for nodes in the knowledge graph based on a query",
                "inputSchema": {"properties": {"query": {"description": "The search query to match against entity names, types, and observation content"}}}}),
            ),
        ];
        Index::build(
            7,
            tools
                .iter()
                .map(|(s, n, t, j)| (*s, *n, t.as_slice(), j.clone())),
        )
    }

    fn best(ix: &Index, q: &str) -> String {
        ix.search(q, 3, |_| true)
            .first()
            .map(|h| h.doc.name.clone())
            .unwrap_or_default()
    }

    #[test]
    fn ranks_the_intended_tool_first() {
        let ix = index();
        assert_eq!(ix.len(), 5);
        assert_eq!(
            best(&ix, "add two numbers together and get the sum"),
            "everything__get-sum"
        );
        assert_eq!(
            best(&ix, "repeat my message back to me"),
            "everything__echo"
        );
        assert_eq!(best(&ix, "create new entities"), "memory__create_entities");
        assert_eq!(best(&ix, "read the whole graph"), "memory__read_graph");
        assert_eq!(best(&ix, "search nodes by query"), "memory__search_nodes");
        // Query words meet the schema's words through the synonym table.
        assert_eq!(best(&ix, "make entities"), "memory__create_entities");
    }

    #[test]
    fn filters_and_limits() {
        let ix = index();
        let hits = ix.search("knowledge graph", 10, |d| d.server == 1);
        assert_eq!(hits.len(), 3);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(ix.search("knowledge graph", 1, |_| true).len() == 1);
        assert!(ix.search("zebra", 5, |_| true).is_empty());
        assert!(ix.search("", 5, |_| true).is_empty());
    }

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
}
