//! The guest component (CPython + harness, built by `build.rs`) and its compiled form.
//!
//! Compiling the 20 MB component takes seconds, so the result is serialised to a cache directory
//! and memory-mapped on later starts. The file name carries the guest's content hash, the
//! wasmtime version and a hash of every engine setting that affects code generation, so a stale
//! artifact is never loaded; a corrupt or incompatible one is recompiled and replaced.

use crate::error::{ExecutorError, Result};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;
use wasmtime::component::Component;
use wasmtime::Engine;

/// The guest component, as built from `guest/`.
pub static GUEST_COMPONENT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/azr_guest.wasm"));
/// SHA-256 of [`GUEST_COMPONENT`].
pub const GUEST_SHA256: &str = env!("AZR_GUEST_SHA256");
/// The wasmtime release the host is built on (kept in step with Cargo.toml).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Where compiled guests are cached: `$AZR_CACHE_DIR`, else `$XDG_CACHE_HOME/azr`, else `~/.cache/azr`.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("AZR_CACHE_DIR").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("azr")
    });
    base.join("executor")
}

/// The cache file for this guest compiled by `engine`.
pub fn compiled_path(engine: &Engine) -> PathBuf {
    let mut settings = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut settings);
    cache_dir().join(format!(
        "guest-{}-wasmtime{WASMTIME_VERSION}-{:016x}.cwasm",
        &GUEST_SHA256[..16],
        settings.finish()
    ))
}

/// How the component was obtained, for `info` and first-use messages.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub path: PathBuf,
    pub compiled_now: bool,
    pub seconds: f64,
}

/// Load the compiled guest from the cache, compiling and caching it when needed.
/// `on_compile` is told before a compilation starts, so a caller can say why it waits.
pub fn load(engine: &Engine, on_compile: &dyn Fn(&Path)) -> Result<(Component, LoadReport)> {
    let path = compiled_path(engine);
    let started = Instant::now();
    if path.exists() {
        // SAFETY: the file is one this function wrote for the same guest and engine settings
        // (the name says so); wasmtime checks the version and settings again on load, and a
        // failure falls through to a recompilation below.
        if let Ok(component) = unsafe { Component::deserialize_file(engine, &path) } {
            let report = LoadReport { path, compiled_now: false, seconds: started.elapsed().as_secs_f64() };
            return Ok((component, report));
        }
    }
    on_compile(&path);
    let component = Component::new(engine, GUEST_COMPONENT)
        .map_err(|e| ExecutorError::Guest(format!("compiling the guest component failed: {e}")))?;
    if let Err(e) = store(&path, &component) {
        // A read-only cache costs time on the next start, never correctness.
        eprintln!("azr-executor: warning: could not cache the compiled guest at {}: {e}", path.display());
    }
    Ok((component, LoadReport { path, compiled_now: true, seconds: started.elapsed().as_secs_f64() }))
}

fn store(path: &Path, component: &Component) -> std::result::Result<(), String> {
    let bytes = component.serialize().map_err(|e| e.to_string())?;
    let dir = path.parent().ok_or("cache path has no parent")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    // Write beside the target and rename, so concurrent starts never see half a file.
    let partial = dir.join(format!(".{}.{}.partial", std::process::id(), rand_suffix()));
    std::fs::write(&partial, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&partial, path).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        e.to_string()
    })
}

fn rand_suffix() -> u64 {
    let mut hasher = DefaultHasher::new();
    std::thread::current().id().hash(&mut hasher);
    Instant::now().hash(&mut hasher);
    hasher.finish()
}
