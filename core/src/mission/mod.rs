//! BabyAI missions: the instruction language ([`instr`]), its verifiers ([`verify`]) and the
//! tokenisation of mission text into word ids for the policy ([`vocab`]).

pub mod instr;
pub mod verify;
pub mod vocab;

pub use instr::{Action as InstrAction, Clause, Instr, Loc, MissionText, ObjDesc};
pub use verify::{Status, Verifier, WorldView};
