//! NIWT distillation: teacher profiling, student distillation, retention verification,
//! adapter and router training.
//!
//! The crate exists so the dependency direction (runtime ← train ← cli, and never runtime →
//! train) is fixed from the start; its stages arrive with the distillation issue. It exports
//! nothing yet.
