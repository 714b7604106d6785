//! Builds the sandbox guest: CPython pre-initialised with the harness in `guest/`, as a WASI
//! component made by componentize-py. The component is embedded in the crate; its compiled form
//! is produced at first use and cached (see `src/guest.rs`).
//!
//! componentize-py comes from PyPI (`pip install componentize-py==0.25.1`; the Python build
//! installs it as a build requirement). `AZR_GUEST_WASM=path` uses a prebuilt component instead.

use sha2::{Digest, Sha256};
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const COMPONENTIZE_PY_VERSION: &str = "0.25.1";
const GUEST_DIR: &str = "guest";

fn main() {
    // A directory makes cargo rescan everything below it.
    println!("cargo:rerun-if-changed={GUEST_DIR}");
    println!("cargo:rerun-if-env-changed=AZR_GUEST_WASM");
    println!("cargo:rerun-if-env-changed=COMPONENTIZE_PY");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dest = out_dir.join("azr_guest.wasm");
    let component = match env::var_os("AZR_GUEST_WASM") {
        Some(prebuilt) => {
            println!("cargo:rerun-if-changed={}", PathBuf::from(&prebuilt).display());
            PathBuf::from(prebuilt)
        }
        None => cached_or_built_guest(&out_dir),
    };
    let bytes =
        fs::read(&component).unwrap_or_else(|e| panic!("cannot read the guest component {}: {e}", component.display()));
    fs::write(&dest, &bytes).expect("write the guest component into OUT_DIR");
    println!("cargo:rustc-env=AZR_GUEST_SHA256={}", hex(&Sha256::digest(&bytes)));
}

/// The component for the current sources, from the cache shared by every profile of this target
/// directory, building it when the sources or the componentize-py version changed.
fn cached_or_built_guest(out_dir: &Path) -> PathBuf {
    let mut hasher = Sha256::new();
    hasher.update(COMPONENTIZE_PY_VERSION);
    for source in guest_sources(Path::new(GUEST_DIR)) {
        hasher.update(source.to_string_lossy().as_bytes());
        hasher.update(fs::read(&source).unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display())));
    }
    let key = hex(&hasher.finalize());
    // OUT_DIR is <target>/<profile>/build/<crate>-<hash>/out; the cache sits beside the profiles.
    let cache_dir = out_dir.ancestors().nth(4).unwrap_or(out_dir).join("azr-guest-cache");
    let cached = cache_dir.join(format!("azr_guest-{}.wasm", &key[..16]));
    if cached.exists() {
        return cached;
    }
    fs::create_dir_all(&cache_dir).expect("create the guest cache directory");
    let partial = cache_dir.join(format!(".azr_guest-{}.{}.partial", &key[..16], std::process::id()));
    let guest_dir = Path::new(GUEST_DIR);
    let mut command = componentize_py();
    command
        .arg("-d")
        .arg(guest_dir.join("wit"))
        .args(["-w", "guest", "componentize", "azr_guest", "-p"])
        .arg(guest_dir)
        .arg("-o")
        .arg(&partial);
    let status = command.status().unwrap_or_else(|e| panic!("cannot run componentize-py ({command:?}): {e}"));
    assert!(status.success(), "componentize-py failed to build the guest ({status}); command: {command:?}");
    fs::rename(&partial, &cached).expect("move the built guest into the cache");
    cached
}

/// The harness and WIT files, in a stable order.
fn guest_sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries.map(|entry| entry.expect("read a guest directory entry")) {
        let path = entry.path();
        if path.is_dir() {
            found.extend(guest_sources(&path));
        } else if path.extension().is_some_and(|ext| ext == "py" || ext == "wit") {
            found.push(path);
        }
    }
    found.sort();
    found
}

/// componentize-py at the pinned version: `COMPONENTIZE_PY`, the `componentize-py` script on PATH,
/// or the `componentize_py` module of the Python that builds the extension.
fn componentize_py() -> Command {
    let mut candidates: Vec<Command> = Vec::new();
    if let Some(path) = env::var_os("COMPONENTIZE_PY") {
        candidates.push(Command::new(path));
    }
    candidates.push(Command::new("componentize-py"));
    for python in [env::var_os("PYO3_PYTHON"), Some("python3".into())].into_iter().flatten() {
        let mut command = Command::new(python);
        command
            .args(["-c", "import sys; sys.argv[0] = 'componentize-py'; from componentize_py import script; script()"]);
        candidates.push(command);
    }
    let mut found = Vec::new();
    for mut candidate in candidates {
        let Ok(output) = candidate.arg("--version").output() else {
            continue;
        };
        let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() && version.ends_with(COMPONENTIZE_PY_VERSION) {
            let mut command = Command::new(candidate.get_program());
            let args: Vec<_> = candidate.get_args().collect();
            command.args(&args[..args.len() - 1]);
            return command;
        }
        if output.status.success() {
            found.push(version);
        }
    }
    panic!(
        "building the sandbox guest needs componentize-py {COMPONENTIZE_PY_VERSION}{}: run \
         `pip install componentize-py=={COMPONENTIZE_PY_VERSION}`, set COMPONENTIZE_PY to its \
         script, or set AZR_GUEST_WASM to a prebuilt guest component",
        if found.is_empty() { String::new() } else { format!(" (found {})", found.join(", ")) }
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
