//! Ranks tools for a need phrased in plain language.
//!
//! Two signals, each blind where the other sees:
//! - BM25 over a tool's words (name, title, description, parameter names and descriptions,
//!   server name, tags), lightly stemmed; name words and tags count three times. It is exact
//!   when the need uses the tool's own words and silent when it does not.
//! - A static sentence embedding: the sum of the tool's word vectors against the sum of the
//!   need's ([`vectors`]: distilled at build time from all-MiniLM-L6-v2, shipped in the crate),
//!   each word's vector less the mean of the catalog's words (`Index::centre`). It meets
//!   "folder" with "directory" and "picture" with "image".
//!
//! The score is `SEMANTIC_WEIGHT * cosine + LEXICAL_WEIGHT * bm25 / (bm25 + LEXICAL_HALF)`:
//! each part depends on the need and the tool alone, so [`Index::explain`] can say how much of
//! a score each part gave. Building an index costs a vector sum per word of every tool; a
//! search costs one dot product per tool and the postings of the need's terms.
//! bench/semantic/README.md measures this against other paths (the full model, WordNet).

mod text;
pub mod vectors;

use std::collections::HashMap;

pub use text::{stem, tokens, words};
use vectors::{dot, normalise, Vectors};

/// BM25 term-frequency saturation.
const K1: f32 = 1.2;
/// BM25 length normalisation.
const B: f32 = 0.75;
/// How many times name words and tags count for BM25.
const NAME_REPEAT: usize = 3;
/// Weight of name words in a tool's vector (description words weigh one).
const NAME_VECTOR_WEIGHT: f32 = 2.0;
/// Weight of parameter names and descriptions in a tool's vector.
const PARAM_VECTOR_WEIGHT: f32 = 0.5;
/// Share of the cosine in the score.
pub const SEMANTIC_WEIGHT: f32 = 1.0;
/// Share of the squashed BM25 in the score.
pub const LEXICAL_WEIGHT: f32 = 0.2;
/// The BM25 score that counts half of [`LEXICAL_WEIGHT`].
const LEXICAL_HALF: f32 = 4.0;
/// A tool sharing no term with the need is a match only from this cosine up: an unrelated
/// need still has a small cosine with every tool, and "nothing matched" is the honest answer.
/// Over bench/semantic/catalog.json, needs no tool there meets ("zebra", "bake a chocolate
/// cake", "play some music", "book a flight to Paris") reach 0.16-0.21 with their nearest tool.
pub const MIN_SCORE: f32 = 0.25;

/// One tool as the ranker reads it.
#[derive(Clone, Debug, Default)]
pub struct Tool {
    /// Its name as clients call it.
    pub name: String,
    /// Its title, if any.
    pub title: String,
    /// Its description.
    pub description: String,
    /// Parameter names with their descriptions.
    pub params: Vec<(String, String)>,
    /// Its server's name.
    pub server: String,
    /// Its server's tags.
    pub tags: Vec<String>,
}

/// A ranked tool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// Position of the tool in the list the index was built from.
    pub tool: usize,
    /// Combined score (higher is better).
    pub score: f32,
    /// BM25 score.
    pub lexical: f32,
    /// Cosine of the need's and the tool's vectors.
    pub semantic: f32,
}

/// Why a tool scored what it did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Explanation {
    /// Combined score.
    pub score: f32,
    /// BM25 score, and what it added to the combined score.
    pub lexical: f32,
    /// Part of `score` from BM25.
    pub lexical_part: f32,
    /// Cosine of the two vectors, and what it added.
    pub semantic: f32,
    /// Part of `score` from the cosine.
    pub semantic_part: f32,
    /// The need's terms the tool has, with their BM25 contribution, largest first.
    pub shared_terms: Vec<(String, f32)>,
    /// Each word of the need with the tool word nearest in meaning and their cosine, closest
    /// first.
    pub related_words: Vec<(String, String, f32)>,
    /// Words of the need the vector table does not know (they count for BM25 only).
    pub unknown_words: Vec<String>,
}

/// Which ranking to use: both signals, or one (for evaluation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// BM25 and the embedding.
    #[default]
    Hybrid,
    /// BM25 alone (the baseline).
    Lexical,
}

/// The index of one list of tools.
#[derive(Default)]
pub struct Index {
    names: Vec<String>,
    lengths: Vec<u32>,
    avg_len: f32,
    /// Documents (tool, term frequency) of each term, tools in order.
    postings: HashMap<String, Vec<(u32, u32)>>,
    /// Unit vectors of the tools, `dims` apiece, each the weighted sum of its words' vectors
    /// less the centre.
    vectors: Vec<f32>,
    dims: usize,
    /// Mean vector of the distinct words of the catalog's names, titles and descriptions. What
    /// every tool's text has in common (frequent and generic words lean one way) says nothing
    /// about which tool fits; taking it from every word before summing leaves what sets a
    /// tool apart, for the need's words too.
    centre: Vec<f32>,
    /// Table rows of each tool's distinct words (for explanations).
    words: Vec<Vec<u32>>,
    table: Option<&'static Vectors>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("tools", &self.names.len())
            .field("dims", &self.dims)
            .finish()
    }
}

impl Index {
    /// Indexes `tools` with the shipped word vectors.
    pub fn build(tools: &[Tool]) -> Index {
        Index::build_with(tools, Vectors::shared())
    }

    fn build_with(tools: &[Tool], table: Option<&'static Vectors>) -> Index {
        let dims = table.map_or(0, Vectors::dims);
        let mut index = Index {
            dims,
            table,
            ..Index::default()
        };
        index.vectors.reserve(tools.len() * dims);
        let mut total = 0usize;
        // Table rows (with their weight) of each tool's words, and the distinct rows of the
        // catalog's names, titles and descriptions, whose mean is the centre.
        let mut tool_rows: Vec<Vec<(u32, f32)>> = Vec::with_capacity(tools.len());
        let mut catalog_rows: Vec<u32> = Vec::new();
        for (i, tool) in tools.iter().enumerate() {
            let mut terms: Vec<String> = Vec::new();
            let mut name_text = tool.name.clone();
            for t in &tool.tags {
                name_text.push(' ');
                name_text.push_str(t);
            }
            for _ in 0..NAME_REPEAT {
                terms.extend(tokens(&name_text));
            }
            let mut body = format!("{} {} {}", tool.server, tool.title, tool.description);
            for (p, d) in &tool.params {
                body.push(' ');
                body.push_str(p);
                body.push(' ');
                body.push_str(d);
            }
            terms.extend(tokens(&body));
            let mut tf: HashMap<&str, u32> = HashMap::new();
            for t in &terms {
                *tf.entry(t).or_default() += 1;
            }
            for (term, n) in tf {
                index
                    .postings
                    .entry(term.to_owned())
                    .or_default()
                    .push((i as u32, n));
            }
            total += terms.len();
            index.lengths.push(terms.len() as u32);
            index.names.push(tool.name.clone());
            if let Some(table) = table {
                let mut rows: Vec<(u32, f32)> = Vec::new();
                let mut add = |text: &str, weight: f32, centre: bool| {
                    for w in words(text) {
                        if let Some(r) = table.row(&w) {
                            rows.push((r as u32, weight));
                            if centre {
                                catalog_rows.push(r as u32);
                            }
                        }
                    }
                };
                add(&name_text, NAME_VECTOR_WEIGHT, true);
                add(&tool.server, 1.0, false);
                add(&tool.title, 1.0, true);
                add(&tool.description, 1.0, true);
                for (p, d) in &tool.params {
                    add(p, PARAM_VECTOR_WEIGHT, false);
                    add(d, PARAM_VECTOR_WEIGHT, false);
                }
                tool_rows.push(rows);
            }
        }
        if let Some(table) = table {
            catalog_rows.sort_unstable();
            catalog_rows.dedup();
            index.centre = vec![0.0; dims];
            for &r in &catalog_rows {
                table.add_to(&mut index.centre, r as usize, 1.0);
            }
            let n = catalog_rows.len().max(1) as f32;
            index.centre.iter_mut().for_each(|c| *c /= n);
            for rows in tool_rows {
                let mut v = vec![0.0; dims];
                for &(r, weight) in &rows {
                    table.add_to(&mut v, r as usize, weight);
                }
                index.subtract_centre(&mut v, rows.iter().map(|&(_, w)| w).sum());
                normalise(&mut v);
                index.vectors.extend_from_slice(&v);
                let mut distinct: Vec<u32> = rows.into_iter().map(|(r, _)| r).collect();
                distinct.sort_unstable();
                distinct.dedup();
                distinct.shrink_to_fit();
                index.words.push(distinct);
            }
        }
        index.avg_len = if tools.is_empty() {
            1.0
        } else {
            (total as f32 / tools.len() as f32).max(1.0)
        };
        index
    }

    /// Takes `weight` times the centre from a sum of word vectors whose weights add up to
    /// `weight`: the same as summing each word's vector less the centre.
    fn subtract_centre(&self, v: &mut [f32], weight: f32) {
        for (x, c) in v.iter_mut().zip(&self.centre) {
            *x -= weight * c;
        }
    }

    /// Number of tools indexed.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no tool is indexed.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Bytes the index holds beyond the tools it was built from: vectors, postings, words.
    pub fn memory_bytes(&self) -> usize {
        let postings: usize = self
            .postings
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity() * 8 + 48)
            .sum();
        let words: usize = self.words.iter().map(|w| w.capacity() * 4 + 24).sum();
        let names: usize = self.names.iter().map(|n| n.capacity() + 24).sum();
        self.vectors.capacity() * 4
            + postings
            + words
            + names
            + self.lengths.capacity() * 4
            + self.centre.capacity() * 4
    }

    /// The `k` best tools for `need` scoring at least [`MIN_SCORE`], best first, among those
    /// `keep` accepts (by position in the list the index was built from).
    pub fn search(
        &self,
        need: &str,
        k: usize,
        mode: Mode,
        keep: impl Fn(usize) -> bool,
    ) -> Vec<Hit> {
        let lexical = self.bm25(need);
        let query = match mode {
            Mode::Hybrid => self.need_vector(need),
            Mode::Lexical => None,
        };
        let mut hits: Vec<Hit> = Vec::new();
        for (tool, &lex) in lexical.iter().enumerate() {
            if !keep(tool) {
                continue;
            }
            let sem = query.as_ref().map_or(0.0, |q| dot(q, self.vector(tool)));
            let hit = Hit {
                tool,
                score: combine(lex, sem, mode),
                lexical: lex,
                semantic: sem,
            };
            // A shared term always qualifies; meaning alone must be close enough.
            if lex > 0.0 || (mode == Mode::Hybrid && sem >= MIN_SCORE) {
                hits.push(hit);
            }
        }
        let order = |a: &Hit, b: &Hit| {
            // Ties go to the shorter name: the more specific tool usually has the plainer name.
            b.score
                .total_cmp(&a.score)
                .then_with(|| self.names[a.tool].len().cmp(&self.names[b.tool].len()))
                .then_with(|| self.names[a.tool].cmp(&self.names[b.tool]))
        };
        if hits.len() > k && k > 0 {
            hits.select_nth_unstable_by(k - 1, order);
        }
        hits.truncate(k);
        hits.sort_by(order);
        hits
    }

    /// Why `tool` scores what it does for `need`.
    pub fn explain(&self, need: &str, tool: usize) -> Explanation {
        let lexical = self.bm25(need).get(tool).copied().unwrap_or(0.0);
        let semantic = self
            .need_vector(need)
            .map_or(0.0, |q| dot(&q, self.vector(tool)));
        let mut shared_terms: Vec<(String, f32)> = unique_terms(need)
            .into_iter()
            .filter_map(|t| {
                let c = self.term_score(&t, tool)?;
                Some((t, c))
            })
            .collect();
        shared_terms.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut related_words = Vec::new();
        let mut unknown_words = Vec::new();
        if let Some(table) = self.table {
            let vocab = table_words(table);
            for w in words(need) {
                let Some(row) = table.row(&w) else {
                    unknown_words.push(w);
                    continue;
                };
                let mut a = table.vector(row);
                normalise(&mut a);
                let best = self.words.get(tool).into_iter().flatten().map(|&r| {
                    let mut b = table.vector(r as usize);
                    normalise(&mut b);
                    (r, dot(&a, &b))
                });
                if let Some((r, sim)) = best.max_by(|x, y| x.1.total_cmp(&y.1)) {
                    let word = vocab.get(r as usize).copied().unwrap_or("?");
                    related_words.push((w, word.to_owned(), sim));
                }
            }
            related_words.sort_by(|a, b| b.2.total_cmp(&a.2));
        }
        let lexical_part = combine(lexical, 0.0, Mode::Hybrid);
        let semantic_part = SEMANTIC_WEIGHT * semantic;
        Explanation {
            score: lexical_part + semantic_part,
            lexical,
            lexical_part,
            semantic,
            semantic_part,
            shared_terms,
            related_words,
            unknown_words,
        }
    }

    fn vector(&self, tool: usize) -> &[f32] {
        &self.vectors[tool * self.dims..(tool + 1) * self.dims]
    }

    fn need_vector(&self, need: &str) -> Option<Vec<f32>> {
        let table = self.table?;
        let mut v = vec![0.0; self.dims];
        let mut count = 0usize;
        for w in words(need) {
            if let Some(r) = table.row(&w) {
                table.add_to(&mut v, r, 1.0);
                count += 1;
            }
        }
        let any = count > 0;
        self.subtract_centre(&mut v, count as f32);
        normalise(&mut v);
        any.then_some(v)
    }

    /// BM25 of every tool having a term of `need`.
    fn bm25(&self, need: &str) -> Vec<f32> {
        let mut scores = vec![0.0; self.len()];
        for term in unique_terms(need) {
            let Some(post) = self.postings.get(&term) else {
                continue;
            };
            let idf = self.idf(post.len());
            for &(tool, tf) in post {
                scores[tool as usize] += self.tf_part(tool as usize, tf) * idf;
            }
        }
        scores
    }

    fn term_score(&self, term: &str, tool: usize) -> Option<f32> {
        let post = self.postings.get(term)?;
        let at = post.binary_search_by_key(&(tool as u32), |p| p.0).ok()?;
        Some(self.idf(post.len()) * self.tf_part(tool, post[at].1))
    }

    fn idf(&self, df: usize) -> f32 {
        let (n, df) = (self.len() as f32, df as f32);
        ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
    }

    fn tf_part(&self, tool: usize, tf: u32) -> f32 {
        let tf = tf as f32;
        let norm = K1 * (1.0 - B + B * self.lengths[tool] as f32 / self.avg_len);
        tf * (K1 + 1.0) / (tf + norm)
    }
}

fn combine(lexical: f32, semantic: f32, mode: Mode) -> f32 {
    match mode {
        Mode::Lexical => lexical,
        Mode::Hybrid => {
            SEMANTIC_WEIGHT * semantic + LEXICAL_WEIGHT * lexical / (lexical + LEXICAL_HALF)
        }
    }
}

fn unique_terms(need: &str) -> Vec<String> {
    let mut terms = tokens(need);
    terms.sort();
    terms.dedup();
    terms
}

/// The table's words by row, for naming a related word.
fn table_words(table: &'static Vectors) -> &'static [&'static str] {
    static WORDS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    WORDS.get_or_init(|| table.words().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, description: &str) -> Tool {
        Tool {
            name: name.to_owned(),
            description: description.to_owned(),
            server: "s".to_owned(),
            ..Tool::default()
        }
    }

    #[test]
    fn a_shared_term_is_found_even_without_a_vector() {
        let ix = Index::build(&[
            tool("s__frobz_qux", "Frobz the qux"),
            tool("s__echo", "Echoes back the input string"),
        ]);
        let hits = ix.search("frobz", 5, Mode::Hybrid, |_| true);
        assert_eq!(hits.first().map(|h| h.tool), Some(0));
        assert!(hits[0].lexical > 0.0);
    }

    #[test]
    fn meaning_alone_ranks_and_explains() {
        let ix = Index::build(&[
            tool("s__get_tiny_image", "Returns a tiny logo image."),
            tool("s__get_sum", "Returns the sum of two numbers"),
        ]);
        let hits = ix.search("give me a small sample picture", 5, Mode::Hybrid, |_| true);
        assert_eq!(hits.first().map(|h| h.tool), Some(0));
        assert!(ix
            .search("give me a small sample picture", 5, Mode::Lexical, |_| true)
            .is_empty());
        let why = ix.explain("give me a small sample picture", 0);
        assert!(why
            .related_words
            .iter()
            .any(|(n, t, _)| n == "picture" && t == "image"));
        assert!((why.score - hits[0].score).abs() < 1e-4);
    }
}
