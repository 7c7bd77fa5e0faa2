//! Intel E810 ("ice") PF driver over the `PciDevice` layer, and its software model.
//!
//! Not written yet: this crate holds the place in the workspace so host-mux's backend selection
//! and the dependency graph are final. See docs/ARCHITECTURE.md.
