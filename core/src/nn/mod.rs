//! Neural-network math for the policy: scalar abstraction, dense blocks with hand-written
//! backward passes, the RIM cell, and the parameter layout shared by every backend.

pub(crate) mod cut;
pub mod dims;
pub mod encoder;
#[cfg(test)]
pub(crate) mod gradcheck;
pub mod heads;
pub mod init;
pub mod instr;
pub mod loss;
pub mod ops;
pub mod optim;
pub mod params;
pub mod policy;
pub mod presets;
pub mod rim;
pub mod sample;
pub mod scalar;
pub mod split;

pub use scalar::Real;
