pub mod versori;
pub mod resources;
pub mod emulator;
