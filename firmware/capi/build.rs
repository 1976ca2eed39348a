//! Writes the C header `include/metarim.h` with cbindgen (settings in cbindgen.toml), only when
//! its contents change, so an unchanged API leaves the file (and its timestamp) alone.
use std::{env, fs, path::PathBuf};

fn main() {
    let dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!("cargo:rerun-if-changed=src/lib.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen: {e}"));
    let mut text = Vec::new();
    bindings.write(&mut text);
    let path = dir.join("include").join("metarim.h");
    if fs::read(&path).ok().as_deref() != Some(&text[..]) {
        if let Err(e) =
            fs::create_dir_all(dir.join("include")).and_then(|()| fs::write(&path, &text))
        {
            println!("cargo:warning=could not write {}: {e}", path.display());
        }
    }
}
