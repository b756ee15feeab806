//! The CPU reference: plain, obviously correct f64 code for every kernel's math, in the kernels'
//! layouts. It is the oracle of the parity tests, and is itself checked against central finite
//! differences (tests/cpu_gradcheck.rs). f64 keeps its own rounding far below the GPU's f32, so a
//! parity failure points at the GPU.

pub mod model;
pub mod ops;
