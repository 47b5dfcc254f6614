//! MPC co-signing (both parties), key custody and the device client.
