//! Tokens packed into training sequences: documents joined into one stream with the
//! tokenizer's own separators, cut into windows of `seq_len + 1` tokens (inputs and the
//! targets shifted by one), visited in a seeded shuffled order per epoch. The position is a
//! small serde value so a resumed run continues on exactly the batch it would have seen.

use nexus_runtime::tokenizer::Tokenizer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{DataError, Document};

/// The ids of one document as training sees it: BOS when the vocabulary adds one (and a
/// chat template did not already write it), the text, then EOS when the vocabulary adds
/// one — or, for vocabularies that add neither (SmolLM2), EOS as the document separator so
/// the model still learns where a document ends.
pub fn tokenize_document(tok: &Tokenizer, doc: &Document) -> Vec<u32> {
    let mut ids = Vec::new();
    let bos_text = tok.bos().and_then(|b| tok.token_text(b));
    let renders_bos = doc.special && bos_text.is_some_and(|b| !b.is_empty() && doc.text.starts_with(b));
    if tok.add_bos() && !renders_bos {
        ids.extend(tok.bos());
    }
    ids.extend(tok.encode(&doc.text, false, doc.special));
    if tok.add_eos() || !tok.add_bos() {
        ids.extend(tok.eos());
    }
    ids
}

/// The token stream of several documents, in order (tokenized in parallel).
pub fn tokenize_documents(tok: &Tokenizer, docs: &[Document]) -> Vec<u32> {
    let per_doc: Vec<Vec<u32>> = docs.par_iter().map(|d| tokenize_document(tok, d)).collect();
    per_doc.concat()
}

/// One batch: `n_seq` rows of `seq_len` input ids and the `seq_len` ids that follow each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub n_seq: usize,
    pub seq_len: usize,
    /// `n_seq × seq_len`, row-major.
    pub inputs: Vec<u32>,
    /// `n_seq × seq_len`: `targets[r][t]` is the token after `inputs[r][t]`.
    pub targets: Vec<u32>,
    /// Which sequences of the dataset these rows are.
    pub sequences: Vec<usize>,
}

/// Where a dataset is in its order, plus enough of its identity that restoring it onto a
/// different dataset is refused instead of silently training on other batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    pub epoch: u64,
    /// The index, in this epoch's order, of the next sequence to hand out.
    pub next: usize,
    pub seed: u64,
    pub seq_len: usize,
    pub n_sequences: usize,
    /// FNV-1a of the token stream.
    pub tokens_hash: u64,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    tokens: Vec<u32>,
    seq_len: usize,
    seed: u64,
    n_sequences: usize,
    tokens_hash: u64,
    epoch: u64,
    next: usize,
    order: Vec<u32>,
}

fn fnv1a(tokens: &[u32]) -> u64 {
    tokens.iter().flat_map(|t| t.to_le_bytes()).fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Epoch `epoch`'s visiting order: a shuffle drawn from its own ChaCha stream, so any epoch's
/// order is computed directly from (seed, epoch) without replaying earlier ones.
fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut rng);
    order
}

impl Dataset {
    /// Sequence `i` covers tokens `i·seq_len ..= i·seq_len + seq_len`: consecutive sequences
    /// share one token so every token is a target exactly once per epoch.
    pub fn new(tokens: Vec<u32>, seq_len: usize, seed: u64) -> Result<Self, DataError> {
        if seq_len == 0 {
            return Err(DataError::BadDataset { what: "the sequence length must be at least 1".into() });
        }
        let n_sequences = tokens.len().saturating_sub(1) / seq_len;
        if n_sequences == 0 {
            return Err(DataError::BadDataset {
                what: format!("{} tokens do not fill one training sequence of {} tokens (+1 target)", tokens.len(), seq_len),
            });
        }
        if n_sequences > u32::MAX as usize {
            return Err(DataError::BadDataset { what: format!("{n_sequences} sequences; at most {} are supported", u32::MAX) });
        }
        let tokens_hash = fnv1a(&tokens);
        let order = epoch_order(n_sequences, seed, 0);
        Ok(Dataset { tokens, seq_len, seed, n_sequences, tokens_hash, epoch: 0, next: 0, order })
    }

    pub fn n_sequences(&self) -> usize {
        self.n_sequences
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Sequence `i`: its `seq_len + 1` tokens.
    pub fn sequence(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.seq_len..(i + 1) * self.seq_len + 1]
    }

    /// The next `n_seq` sequences of the shuffled order, going on into the next epoch (a new
    /// shuffle) when this one runs out.
    pub fn next_batch(&mut self, n_seq: usize) -> Batch {
        let mut batch = Batch {
            n_seq,
            seq_len: self.seq_len,
            inputs: Vec::with_capacity(n_seq * self.seq_len),
            targets: Vec::with_capacity(n_seq * self.seq_len),
            sequences: Vec::with_capacity(n_seq),
        };
        for _ in 0..n_seq {
            if self.next == self.n_sequences {
                self.epoch += 1;
                self.next = 0;
                self.order = epoch_order(self.n_sequences, self.seed, self.epoch);
            }
            let i = self.order[self.next] as usize;
            self.next += 1;
            let s = self.sequence(i);
            batch.inputs.extend_from_slice(&s[..self.seq_len]);
            batch.targets.extend_from_slice(&s[1..]);
            batch.sequences.push(i);
        }
        batch
    }

    pub fn position(&self) -> DataPosition {
        DataPosition {
            epoch: self.epoch,
            next: self.next,
            seed: self.seed,
            seq_len: self.seq_len,
            n_sequences: self.n_sequences,
            tokens_hash: self.tokens_hash,
        }
    }

    /// Continues from a saved position; refuses one saved on other tokens, another sequence
    /// length or another seed.
    pub fn restore(&mut self, pos: DataPosition) -> Result<(), DataError> {
        let mismatch = |what: String| Err(DataError::PositionMismatch { what });
        if pos.seq_len != self.seq_len {
            return mismatch(format!("saved with sequence length {}, this dataset has {}", pos.seq_len, self.seq_len));
        }
        if pos.seed != self.seed {
            return mismatch(format!("saved with shuffle seed {}, this dataset has {}", pos.seed, self.seed));
        }
        if pos.n_sequences != self.n_sequences || pos.tokens_hash != self.tokens_hash {
            return mismatch(format!(
                "saved on {} sequences with token hash {:016x}, this dataset has {} with {:016x} (the data changed)",
                pos.n_sequences, pos.tokens_hash, self.n_sequences, self.tokens_hash
            ));
        }
        if pos.next > self.n_sequences {
            return mismatch(format!("next sequence {} is past the {} of an epoch", pos.next, self.n_sequences));
        }
        self.epoch = pos.epoch;
        self.next = pos.next;
        self.order = epoch_order(self.n_sequences, self.seed, self.epoch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_is_a_target_once_per_epoch() {
        let tokens: Vec<u32> = (0..101).collect();
        let mut d = Dataset::new(tokens, 10, 7).unwrap();
        assert_eq!(d.n_sequences(), 10);
        let b = d.next_batch(10);
        assert_eq!(d.epoch(), 0);
        let mut targets = b.targets.clone();
        targets.sort_unstable();
        assert_eq!(targets, (1..101).collect::<Vec<u32>>());
        for r in 0..b.n_seq {
            let (inp, tgt) = (&b.inputs[r * 10..(r + 1) * 10], &b.targets[r * 10..(r + 1) * 10]);
            assert!(inp.iter().zip(tgt).all(|(a, t)| t == &(a + 1)), "targets are the inputs shifted by one");
        }
        assert_ne!(b.sequences, (0..10).collect::<Vec<_>>(), "the order is shuffled");
        let next = d.next_batch(10);
        assert_eq!(d.epoch(), 1);
        assert_ne!(next.sequences, b.sequences, "each epoch has its own shuffle");
    }

    #[test]
    fn same_seed_same_batches_and_restore_continues_exactly() {
        let tokens: Vec<u32> = (0..1000).map(|i| (i * 7919 % 503) as u32).collect();
        let mut a = Dataset::new(tokens.clone(), 16, 42).unwrap();
        let mut b = Dataset::new(tokens.clone(), 16, 42).unwrap();
        for _ in 0..5 {
            assert_eq!(a.next_batch(7), b.next_batch(7));
        }
        // Past the end of the first epoch (62 sequences), then save.
        for _ in 0..10 {
            a.next_batch(7);
        }
        let pos = a.position();
        let json = serde_json::to_string(&pos).unwrap();
        let expected: Vec<Batch> = (0..3).map(|_| a.next_batch(7)).collect();

        let mut resumed = Dataset::new(tokens.clone(), 16, 42).unwrap();
        resumed.restore(serde_json::from_str(&json).unwrap()).unwrap();
        let got: Vec<Batch> = (0..3).map(|_| resumed.next_batch(7)).collect();
        assert_eq!(got, expected);

        let mut other_seed = Dataset::new(tokens.clone(), 16, 43).unwrap();
        assert_ne!(other_seed.next_batch(7), Dataset::new(tokens.clone(), 16, 42).unwrap().next_batch(7));
        assert!(matches!(other_seed.restore(pos), Err(DataError::PositionMismatch { .. })));
        let mut changed = tokens.clone();
        changed[3] += 1;
        let e = Dataset::new(changed, 16, 42).unwrap().restore(pos).unwrap_err();
        assert!(e.to_string().contains("the data changed"), "{e}");
        assert!(Dataset::new(tokens, 32, 42).unwrap().restore(pos).is_err());
    }

    #[test]
    fn too_few_tokens_is_an_error() {
        assert!(Dataset::new((0..16).collect(), 16, 0).is_err());
        assert!(Dataset::new((0..17).collect(), 16, 0).is_ok());
        assert!(Dataset::new((0..17).collect(), 0, 0).is_err());
    }
}
