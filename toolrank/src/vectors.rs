//! The static word-vector table: one vector per English word, distilled at build time from
//! all-MiniLM-L6-v2 (bench/semantic/distill.py; data/README.md has the sources and licences).
//! A word's vector is its one-word sentence embedding reduced by PCA to a unit vector, so the
//! sum of a text's word vectors (centred on its catalog's, `Index`) is a cheap sentence
//! embedding.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::text;

/// The table as shipped inside the crate: nothing is read or fetched at run time.
static TABLE: &[u8] = include_bytes!("../data/word_vectors.bin");

const MAGIC: &[u8; 8] = b"MCPWVEC1";

/// Why the table could not be read (a corrupt build, never user input).
#[derive(Debug)]
pub struct TableError(&'static str);

impl std::fmt::Display for TableError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "word-vector table: {}", self.0)
    }
}

impl std::error::Error for TableError {}

/// Word vectors, quantised: `dims` signed bytes and one scale per word.
pub struct Vectors {
    dims: usize,
    rows: HashMap<&'static str, usize>,
    vocab: &'static str,
    scales: Vec<f32>,
    values: &'static [u8],
}

impl Vectors {
    /// The shipped table, parsed once per process; `None` only if the build shipped a corrupt
    /// one (ranking then falls back to BM25 alone).
    pub fn shared() -> Option<&'static Vectors> {
        static SHARED: OnceLock<Option<Vectors>> = OnceLock::new();
        SHARED
            .get_or_init(|| match Vectors::parse(TABLE) {
                Ok(v) => Some(v),
                Err(e) => {
                    eprintln!("{e}: search ranks by words alone");
                    None
                }
            })
            .as_ref()
    }

    fn parse(bytes: &'static [u8]) -> Result<Vectors, TableError> {
        let u32_at = |at: usize| -> Result<usize, TableError> {
            bytes
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_le_bytes(b) as usize)
                .ok_or(TableError("truncated header"))
        };
        if bytes.get(..8) != Some(MAGIC.as_slice()) {
            return Err(TableError("bad magic"));
        }
        let (count, dims, vocab_len) = (u32_at(8)?, u32_at(12)?, u32_at(16)?);
        let vocab = bytes
            .get(20..20 + vocab_len)
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or(TableError("bad vocabulary"))?;
        let values = bytes
            .get(20 + vocab_len..)
            .ok_or(TableError("no vectors"))?;
        let stride = 4 + dims;
        if values.len() != count * stride {
            return Err(TableError("size does not match the header"));
        }
        let rows: HashMap<&'static str, usize> =
            vocab.lines().enumerate().map(|(i, w)| (w, i)).collect();
        if rows.len() != count {
            return Err(TableError("vocabulary size does not match the header"));
        }
        let scales = values
            .chunks_exact(stride)
            .map(|r| f32::from_le_bytes([r[0], r[1], r[2], r[3]]))
            .collect();
        Ok(Vectors {
            dims,
            rows,
            vocab,
            scales,
            values,
        })
    }

    /// Dimensions of a vector.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Words in the table.
    pub fn len(&self) -> usize {
        self.scales.len()
    }

    /// True for an empty table.
    pub fn is_empty(&self) -> bool {
        self.scales.is_empty()
    }

    /// The row of `word` (lower-case), or of its base form ("directories" -> "directory").
    pub fn row(&self, word: &str) -> Option<usize> {
        self.rows
            .get(word)
            .copied()
            .or_else(|| text::base_forms(word).find_map(|b| self.rows.get(b.as_str()).copied()))
    }

    /// The words, in row order.
    pub fn words(&self) -> impl Iterator<Item = &'static str> {
        self.vocab.lines()
    }

    /// Adds `weight` times the vector of `row` to `acc`.
    pub fn add_to(&self, acc: &mut [f32], row: usize, weight: f32) {
        let stride = 4 + self.dims;
        let bytes = &self.values[row * stride + 4..(row + 1) * stride];
        let s = self.scales[row] * weight;
        for (a, &b) in acc.iter_mut().zip(bytes) {
            *a += s * f32::from(b as i8);
        }
    }

    /// The vector of `row`.
    pub fn vector(&self, row: usize) -> Vec<f32> {
        let mut v = vec![0.0; self.dims];
        self.add_to(&mut v, row, 1.0);
        v
    }
}

/// Scales `v` to unit length (leaves a zero vector alone).
pub fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Dot product. Eight running sums, not one: a single float sum must be added in order, which
/// keeps the compiler from using vector instructions; eight independent ones map onto them
/// (a search is one of these per tool).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut sums = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            sums[i] += x[i] * y[i];
        }
    }
    sums.iter().sum::<f32>() + tail
}
