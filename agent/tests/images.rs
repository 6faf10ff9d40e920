//! The image store on real files: build an image from a busybox root filesystem, list it, unpack it once, export the
//! store as an OCI layout tar and import that elsewhere; a corrupt or incomplete tar adds nothing; whiteouts become
//! overlayfs whiteouts; hostile layers (absolute paths, links out, device nodes, a gzip bomb) are refused or contained.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use agora_agent::images::{Error, ImageStore, normalize_reference, unpack_layer};

/// A tiny root filesystem: Debian's static busybox and a few of its links.
fn busybox_rootfs(dir: &Path) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::copy("/bin/busybox", dir.join("bin/busybox")).expect("busybox-static is installed (make deps)");
    for tool in ["sh", "sleep", "echo"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(tool)).unwrap();
    }
}

/// The store's own directory as an OCI layout tar (what `skopeo copy ... oci-archive:` writes).
fn export(store: &ImageStore, to: &Path) {
    let file = fs::File::create(to).unwrap();
    let mut tar = tar::Builder::new(file);
    tar.append_path_with_name(store.root().join("oci-layout"), "oci-layout").unwrap();
    tar.append_path_with_name(store.root().join("index.json"), "index.json").unwrap();
    tar.append_dir_all("blobs", store.root().join("blobs")).unwrap();
    tar.finish().unwrap();
}

#[test]
fn build_list_resolve_export_and_import() {
    let work = tempfile::tempdir().unwrap();
    let rootfs = work.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let store = ImageStore::open(&work.path().join("agent")).unwrap();
    let built = store.build(&rootfs, "busybox").unwrap();
    assert_eq!(built.reference, "busybox:latest");
    assert!(built.digest.starts_with("sha256:"));
    assert_eq!(store.list().unwrap(), std::slice::from_ref(&built));

    let image = store.resolve("busybox").unwrap();
    assert_eq!(image.layers.len(), 1);
    let layer = &image.layers[0];
    assert!(layer.join("bin/busybox").is_file());
    assert_eq!(fs::read_link(layer.join("bin/sh")).unwrap(), Path::new("busybox"));
    assert_eq!(image.config.os().to_string(), "linux");
    let inode = fs::metadata(layer).unwrap().ino();
    let again = store.resolve("busybox:latest").unwrap();
    assert_eq!(fs::metadata(&again.layers[0]).unwrap().ino(), inode, "a layer is unpacked once and shared");

    // Rebuilding under the same name replaces it; another name adds one.
    store.build(&rootfs, "tools/busybox:1.36").unwrap();
    assert_eq!(store.list().unwrap().len(), 2);

    // The store is an OCI layout: exported as a tar, it imports into another store with the same digests.
    let archive = work.path().join("images.tar");
    export(&store, &archive);
    let other = ImageStore::open(&work.path().join("other")).unwrap();
    let imported = other.import(&archive, None).unwrap();
    let mut names: Vec<String> = imported.iter().map(|i| i.reference.clone()).collect();
    names.sort();
    assert_eq!(names, ["busybox:latest", "tools/busybox:1.36"]);
    assert_eq!(other.list().unwrap(), store.list().unwrap());
    assert!(other.resolve("tools/busybox:1.36").unwrap().layers[0].join("bin/busybox").is_file());
}

#[test]
fn a_corrupt_or_incomplete_import_adds_nothing() {
    let work = tempfile::tempdir().unwrap();
    let rootfs = work.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let store = ImageStore::open(&work.path().join("agent")).unwrap();
    let built = store.build(&rootfs, "busybox").unwrap();

    // Flip a byte of the layer blob: its digest no longer matches.
    let layer_hex = {
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(store.root().join("blobs/sha256").join(&built.digest[7..])).unwrap())
                .unwrap();
        manifest["layers"][0]["digest"].as_str().unwrap()[7..].to_owned()
    };
    let blob = store.root().join("blobs/sha256").join(&layer_hex);
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let archive = work.path().join("corrupt.tar");
    export(&store, &archive);
    let other = ImageStore::open(&work.path().join("other")).unwrap();
    let error = other.import(&archive, None).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Invalid(_)), "{message}");
    assert!(message.contains(&format!("sha256:{layer_hex}")) && message.contains("does not match"), "{message}");
    assert!(other.list().unwrap().is_empty(), "nothing is named after a failed import");
    let left: Vec<_> = fs::read_dir(other.root().join("blobs/sha256")).unwrap().collect();
    assert!(left.is_empty(), "the blobs it brought are taken away again: {left:?}");

    // A tar that is not an OCI layout says so.
    let plain = work.path().join("plain.tar");
    let mut tar = tar::Builder::new(fs::File::create(&plain).unwrap());
    tar.append_dir_all("rootfs", &rootfs).unwrap();
    tar.finish().unwrap();
    let error = other.import(&plain, None).unwrap_err().to_string();
    assert!(error.contains("is not an OCI image layout"), "{error}");

    assert!(matches!(other.resolve("nope"), Err(Error::NotFound(_))));
}

#[test]
fn references_are_checked() {
    assert_eq!(normalize_reference("busybox").unwrap(), "busybox:latest");
    assert_eq!(normalize_reference("registry:5000/team/app:v1.2").unwrap(), "registry:5000/team/app:v1.2");
    assert!(normalize_reference("Busybox").unwrap_err().to_string().contains("image name \"Busybox\""));
    assert!(normalize_reference("app:bad tag").unwrap_err().to_string().contains("image tag \"bad tag\""));
    assert!(normalize_reference("a//b").is_err());
}

#[test]
fn oci_whiteouts_become_overlayfs_whiteouts() {
    let work = tempfile::tempdir().unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(0);
        header.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        layer.append_data(&mut header, path, std::io::empty()).unwrap();
    };
    add("etc/", tar::EntryType::Directory);
    add("etc/kept", tar::EntryType::Regular);
    add("etc/.wh.removed", tar::EntryType::Regular);
    add("var/cache/.wh..wh..opq", tar::EntryType::Regular);
    let bytes = layer.into_inner().unwrap();
    let dir = work.path().join("layer");
    fs::create_dir_all(&dir).unwrap();
    unpack_layer(bytes.as_slice(), &dir, u64::MAX).unwrap();
    assert!(dir.join("etc/kept").is_file());
    let removed = fs::metadata(dir.join("etc/removed")).unwrap();
    assert!(removed.file_type().is_char_device() && removed.rdev() == 0, "a 0/0 character device");
    assert!(!dir.join("etc/.wh.removed").exists());
    let mut opaque = [0u8; 1];
    let n = rustix::fs::getxattr(dir.join("var/cache"), "trusted.overlay.opaque", &mut opaque).unwrap();
    assert_eq!(&opaque[..n], b"y");

    // An entry climbing out of the layer is refused.
    let mut evil = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    let name = b"../escaped";
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_cksum();
    evil.append(&header, &b"x"[..]).unwrap();
    let error = unpack_layer(evil.into_inner().unwrap().as_slice(), &dir, u64::MAX).unwrap_err();
    assert!(error.to_string().contains("leaves the layer"), "{error}");
    assert!(!work.path().join("escaped").exists());
}

/// One entry of a layer, written with whatever header a hostile image would have.
fn entry(layer: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_mode(0o4755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    if kind == tar::EntryType::Char {
        header.set_device_major(1).unwrap();
        header.set_device_minor(1).unwrap();
    }
    let name = path.as_bytes();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    if let Some(link) = link {
        let link = link.as_bytes();
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    }
    header.set_cksum();
    layer.append(&header, data).unwrap();
}

fn one_entry_layer(path: &str, kind: tar::EntryType, link: Option<&str>) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    entry(&mut layer, path, kind, link, if kind == tar::EntryType::Regular { b"x" } else { b"" });
    layer.into_inner().unwrap()
}

#[test]
fn hostile_layers_are_refused_or_contained() {
    let work = tempfile::tempdir().unwrap();
    let marker = format!("agora-hostile-{}", std::process::id());
    let fresh = |name: &str| {
        let dir = work.path().join(name);
        fs::create_dir_all(&dir).unwrap();
        dir
    };

    // An absolute path lands inside the layer, not on the host.
    let dir = fresh("absolute");
    unpack_layer(one_entry_layer(&format!("/tmp/{marker}"), tar::EntryType::Regular, None).as_slice(), &dir, u64::MAX)
        .unwrap();
    assert!(dir.join("tmp").join(&marker).is_file());
    assert!(!Path::new("/tmp").join(&marker).exists(), "nothing written on the host");

    // Through a symbolic link that leads out: refused, nothing written outside.
    let dir = fresh("symlink");
    let mut layer = tar::Builder::new(Vec::new());
    entry(&mut layer, "out", tar::EntryType::Symlink, Some("/tmp"), b"");
    entry(&mut layer, &format!("out/{marker}"), tar::EntryType::Regular, None, b"x");
    let refused = unpack_layer(layer.into_inner().unwrap().as_slice(), &dir, u64::MAX).unwrap_err();
    assert!(!Path::new("/tmp").join(&marker).exists(), "nothing written through the link: {refused}");

    // A hard link to a host file, by an absolute or a climbing path: refused, no link made.
    for (case, target) in [("hard-absolute", "/etc/shadow"), ("hard-climbing", "../../../../../../etc/shadow")] {
        let dir = fresh(case);
        let layer = one_entry_layer("shadow", tar::EntryType::Link, Some(target));
        assert!(unpack_layer(layer.as_slice(), &dir, u64::MAX).is_err(), "{case}");
        assert!(!dir.join("shadow").exists(), "{case}: no link to the host's file");
    }

    // A device node (here /dev/mem's 1:1) is not created; a set-user-ID file keeps its bit (inert: no_new_privs).
    let dir = fresh("device");
    let mut layer = tar::Builder::new(Vec::new());
    entry(&mut layer, "mem", tar::EntryType::Char, None, b"");
    entry(&mut layer, "su", tar::EntryType::Regular, None, b"x");
    unpack_layer(layer.into_inner().unwrap().as_slice(), &dir, u64::MAX).unwrap();
    assert!(fs::symlink_metadata(dir.join("mem")).is_err(), "no device node");
    assert_eq!(fs::metadata(dir.join("su")).unwrap().permissions().mode() & 0o7777, 0o4755);

    // A gzip bomb: 64 MiB of zeros in 64 KiB stops at the limit.
    let dir = fresh("bomb");
    let mut layer = tar::Builder::new(Vec::new());
    let zeros = vec![0u8; 64 * 1024 * 1024];
    entry(&mut layer, "zeros", tar::EntryType::Regular, None, &zeros);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut gzip, &layer.into_inner().unwrap()).unwrap();
    let compressed = gzip.finish().unwrap();
    assert!(compressed.len() < 256 * 1024, "{} bytes", compressed.len());
    let bomb = unpack_layer(flate2::read::GzDecoder::new(compressed.as_slice()), &dir, 1024 * 1024).unwrap_err();
    assert!(bomb.to_string().contains("more than 1048576 bytes"), "{bomb}");
}
