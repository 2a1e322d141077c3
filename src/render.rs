//! `meteor-operator render`: every object the operator would create, offline.

use std::path::Path;

/// Renders the MeteorApps in `path` to multi-document YAML.
pub fn render_file(_path: &Path) -> anyhow::Result<String> {
    anyhow::bail!("render is not built yet")
}
