//! A stable hardware id, derived from several machine components where the OS has them, hashed
//! with the product so the id means nothing outside it (it is not a tracking id). Containers and
//! virtual machines are reported as such (a container's machine id may be its image's: vendors who
//! license containers should pass their own id). Vendors with their own scheme override it.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// What the machine is, as far as the OS tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Environment {
    Physical,
    VirtualMachine,
    Container,
}

/// A derived hardware id and what it was derived from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HardwareId {
    /// 32 hex characters: SHA-256 of the product and the components.
    pub id: String,
    /// The names of the components used (not their values).
    pub components: Vec<&'static str>,
    pub environment: Environment,
}

impl HardwareId {
    pub fn is_vm(&self) -> bool {
        self.environment != Environment::Physical
    }
}

/// The components this machine has: (name, value), in a fixed order.
fn components() -> Vec<(&'static str, String)> {
    let read = |path: &str| std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let mut found = Vec::new();
    if cfg!(target_os = "linux") {
        if let Some(id) = read("/etc/machine-id").or_else(|| read("/var/lib/dbus/machine-id")) {
            found.push(("machine_id", id));
        }
        // Readable by root only on most systems; used where it can be read.
        if let Some(uuid) = read("/sys/class/dmi/id/product_uuid") {
            found.push(("dmi_product_uuid", uuid));
        }
        if let Some(serial) = read("/sys/class/dmi/id/board_serial") {
            found.push(("dmi_board_serial", serial));
        }
    }
    if cfg!(target_os = "macos") {
        if let Some(uuid) = command("ioreg", &["-rd1", "-c", "IOPlatformExpertDevice"])
            .and_then(|out| out.lines().find(|l| l.contains("IOPlatformUUID")).map(str::to_string))
            .and_then(|line| line.split('"').nth(3).map(str::to_string))
        {
            found.push(("platform_uuid", uuid));
        }
    }
    if cfg!(target_os = "windows") {
        if let Some(guid) = command("reg", &["query", r"HKLM\SOFTWARE\Microsoft\Cryptography", "/v", "MachineGuid"])
            .and_then(|out| out.split_whitespace().last().map(str::to_string))
        {
            found.push(("machine_guid", guid));
        }
    }
    found
}

fn command(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program).args(args).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn environment() -> Environment {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default().to_ascii_lowercase();
    if std::path::Path::new("/.dockerenv").exists()
        || std::path::Path::new("/run/.containerenv").exists()
        || ["docker", "kubepods", "containerd", "lxc", "podman"].iter().any(|m| read("/proc/1/cgroup").contains(m))
    {
        return Environment::Container;
    }
    let vendor = format!("{} {}", read("/sys/class/dmi/id/sys_vendor"), read("/sys/class/dmi/id/product_name"));
    let hypervisors = [
        "qemu",
        "kvm",
        "vmware",
        "virtualbox",
        "xen",
        "bochs",
        "hyper-v",
        "virtual machine",
        "amazon ec2",
        "google compute",
        "parallels",
    ];
    if hypervisors.iter().any(|h| vendor.contains(h)) || read("/proc/cpuinfo").contains(" hypervisor") {
        return Environment::VirtualMachine;
    }
    Environment::Physical
}

/// The hash of `product` and `components` (the product first, so two products see unrelated ids).
fn hashed(product: &str, components: &[(&'static str, String)]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"keygate-hwid/1\0");
    hasher.update(product.as_bytes());
    for (name, value) in components {
        hasher.update([0]);
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(value.as_bytes());
    }
    hasher.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// This machine's hardware id for `product`, or `None` when the OS gives no component to derive
/// one from (then the vendor must supply one).
pub fn derive(product: &str) -> Option<HardwareId> {
    let components = components();
    if components.is_empty() {
        return None;
    }
    Some(HardwareId {
        id: hashed(product, &components),
        components: components.iter().map(|(name, _)| *name).collect(),
        environment: environment(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_stable_per_product_and_hides_the_components() {
        let parts = vec![("machine_id", "0123456789abcdef".to_string())];
        assert_eq!(hashed("editor", &parts), hashed("editor", &parts));
        assert_ne!(hashed("editor", &parts), hashed("viewer", &parts), "not a cross-product tracking id");
        assert!(!hashed("editor", &parts).contains("0123456789abcdef"));
        assert_eq!(hashed("editor", &parts).len(), 32);
    }

    #[test]
    fn this_machine_derives_the_same_id_twice() {
        if let Some(first) = derive("editor") {
            assert_eq!(Some(first.clone()), derive("editor"));
            assert!(!first.components.is_empty());
        }
    }
}
