//! Neural-network math for the policy: scalar abstraction, dense blocks with hand-written
//! backward passes, the RIM cell, and the parameter layout shared by every backend.

pub mod dims;
#[cfg(test)]
pub(crate) mod gradcheck;
pub mod ops;
pub mod scalar;

pub use scalar::Real;
