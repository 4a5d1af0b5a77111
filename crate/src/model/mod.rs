//! The VARCO-VISION model: [`config`] (both checkpoint layouts), the SigLIP tower and projector on the GPU
//! ([`vision`]).

pub mod config;
pub mod vision;
