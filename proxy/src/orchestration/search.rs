//! Capability search over every upstream tool, so an agent finds a tool by its need.
//!
//! The ranking is `toolrank`'s (shared with `mcpctl tools search`): BM25 over a tool's words
//! combined with a static word embedding, so "show what is inside a folder" meets
//! `list_directory`. This module turns the catalog's tool JSON into what the ranker reads and
//! keeps each tool's JSON beside it for the answer. Indexes are built off the shards
//! ([`super::search_builder`]).

use simd_json::prelude::*;
use toolrank::{Explanation, Mode, Tool};

use super::Json;

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

/// The search index over the tools of one catalog generation.
#[derive(Debug, Default)]
pub struct Index {
    /// The catalog generation indexed.
    pub generation: u64,
    docs: Vec<Doc>,
    rank: toolrank::Index,
}

/// A ranked tool.
#[derive(Clone, Debug)]
pub struct Hit<'i> {
    /// The tool.
    pub doc: &'i Doc,
    /// Its score (higher is better).
    pub score: f64,
    /// Its position in the index, for [`Index::explain`].
    pub position: usize,
}

impl Index {
    /// Indexes `tools`: (server, server name, tags, tool JSON).
    pub fn build<'a>(
        generation: u64,
        tools: impl IntoIterator<Item = (usize, &'a str, &'a [String], Json)>,
    ) -> Index {
        let mut docs = Vec::new();
        let mut texts = Vec::new();
        for (server, server_name, tags, json) in tools {
            let Some(name) = json.get_str("name").map(str::to_owned) else {
                continue;
            };
            texts.push(tool_text(&name, server_name, tags, &json));
            docs.push(Doc { name, server, json });
        }
        Index {
            generation,
            rank: toolrank::Index::build(&texts),
            docs,
        }
    }

    /// Number of tools indexed.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// True when no tool is indexed.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Bytes of ranking data per tool (vectors, postings), beside the tools' own JSON.
    pub fn memory_per_tool(&self) -> usize {
        self.rank.memory_bytes() / self.docs.len().max(1)
    }

    /// The `k` best tools for `query`, best first; `keep` filters.
    pub fn search(&self, query: &str, k: usize, keep: impl Fn(&Doc) -> bool) -> Vec<Hit<'_>> {
        self.rank
            .search(query, k, Mode::Hybrid, |i| keep(&self.docs[i]))
            .into_iter()
            .map(|h| Hit {
                doc: &self.docs[h.tool],
                score: f64::from(h.score),
                position: h.tool,
            })
            .collect()
    }

    /// Why the tool of `hit` ranked for `query`.
    pub fn explain(&self, query: &str, hit: &Hit<'_>) -> Explanation {
        self.rank.explain(query, hit.position)
    }
}

/// What the ranker reads of a tool: its name, title, description, parameters, server, tags.
fn tool_text(name: &str, server: &str, tags: &[String], json: &Json) -> Tool {
    let params = json
        .get("inputSchema")
        .and_then(|s| s.get("properties"))
        .and_then(|p| p.as_object())
        .map(|props| {
            props
                .iter()
                .map(|(p, schema)| {
                    let d = schema.get_str("description").unwrap_or_default();
                    (p.to_string(), d.to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    Tool {
        name: name.to_owned(),
        title: json.get_str("title").unwrap_or_default().to_owned(),
        description: json.get_str("description").unwrap_or_default().to_owned(),
        params,
        server: server.to_owned(),
        tags: tags.to_vec(),
    }
}

/// An explanation as JSON, for `search_tools` with `explain`.
pub fn explanation_json(e: &Explanation) -> Json {
    let round = |x: f32| (f64::from(x) * 1000.0).round() / 1000.0;
    let mut out = Json::object();
    let _ = out.insert("lexical_bm25", round(e.lexical));
    let _ = out.insert("lexical_part", round(e.lexical_part));
    let _ = out.insert("semantic_cosine", round(e.semantic));
    let _ = out.insert("semantic_part", round(e.semantic_part));
    let shared: Vec<Json> = e
        .shared_terms
        .iter()
        .map(|(t, s)| {
            let mut o = Json::object();
            let _ = o.insert("term", t.clone());
            let _ = o.insert("bm25", round(*s));
            o
        })
        .collect();
    let _ = out.insert("shared_terms", Json::Array(Box::new(shared)));
    let related: Vec<Json> = e
        .related_words
        .iter()
        .map(|(q, t, s)| {
            let mut o = Json::object();
            let _ = o.insert("need_word", q.clone());
            let _ = o.insert("tool_word", t.clone());
            let _ = o.insert("cosine", round(*s));
            o
        })
        .collect();
    let _ = out.insert("related_words", Json::Array(Box::new(related)));
    if !e.unknown_words.is_empty() {
        let unknown: Vec<Json> = e
            .unknown_words
            .iter()
            .map(|w| Json::from(w.clone()))
            .collect();
        let _ = out.insert("unknown_words", Json::Array(Box::new(unknown)));
    }
    out
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
                0,
                "everything",
                vec![],
                json!({"name": "everything__get-tiny-image", "description": "Returns a tiny MCP logo image."}),
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
            (
                2,
                "filesystem",
                vec![],
                json!({"name": "filesystem__list_directory", "description": "Get a detailed listing of all files and directories in a specified path.",
                "inputSchema": {"properties": {"path": {"type": "string"}}}}),
            ),
            (
                2,
                "filesystem",
                vec![],
                json!({"name": "filesystem__edit_file", "description": "Make line-based edits to a text file. Each edit replaces exact line sequences with new content.",
                "inputSchema": {"properties": {"path": {"type": "string"}, "edits": {"type": "array"}}}}),
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
        assert_eq!(ix.len(), 8);
        assert_eq!(
            best(&ix, "add two numbers together and get the sum"),
            "everything__get-sum"
        );
        assert_eq!(best(&ix, "echo back a message I send"), "everything__echo");
        assert_eq!(best(&ix, "create new entities"), "memory__create_entities");
        assert_eq!(best(&ix, "read the whole graph"), "memory__read_graph");
        assert_eq!(best(&ix, "search nodes by query"), "memory__search_nodes");
    }

    #[test]
    fn meaning_without_shared_words() {
        let ix = index();
        assert_eq!(
            best(&ix, "show what is inside a folder"),
            "filesystem__list_directory"
        );
        assert_eq!(
            best(&ix, "give me a small sample picture"),
            "everything__get-tiny-image"
        );
    }

    #[test]
    fn filters_limits_and_explains() {
        let ix = index();
        let hits = ix.search("knowledge graph", 10, |d| d.server == 1);
        assert_eq!(hits.len(), 3);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(ix.search("knowledge graph", 1, |_| true).len() == 1);
        assert!(ix.search("zebra", 5, |_| true).is_empty());
        assert!(ix.search("", 5, |_| true).is_empty());
        let hits = ix.search("show what is inside a folder", 1, |_| true);
        let why = ix.explain("show what is inside a folder", &hits[0]);
        assert!(why
            .related_words
            .iter()
            .any(|(q, t, _)| q == "folder" && t.starts_with("director")));
    }
}
