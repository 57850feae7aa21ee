//! NIWT distillation: profile a teacher's activations, initialize a smaller student from it,
//! distill with logit KL plus anchoring to the teacher's principal subspaces, and verify what
//! the student kept per capability before the teacher is removed.

pub mod anchor;
pub mod checkpoint;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
pub mod engine;
pub mod error;
pub mod export;
pub mod importance;
pub mod init;
pub mod lora;
pub mod optim;
pub mod pipeline;
pub mod plot;
pub mod profile;
pub mod router;
pub mod student;
pub mod teacher;
#[cfg(test)]
mod test_util;
pub mod trainer;
pub mod verify;
