//! The order of an install's phases, apart from what they do: [`sequence`] drives any
//! [`Phases`]; the device's are in `install/mod.rs`, the tests record the order with no
//! I/O.

use super::{admit, InstallError};
use crate::fault::{CwmpFault, Fault};
use crate::package::Package;
use crate::status::FirmwareStatus;

/// What the install records about its target slot (status.json, TR-181 terms).
#[derive(Debug, Clone, Copy)]
pub(super) enum SlotRecord<'a> {
    /// The install failed after the target was marked bad.
    Failed(FirmwareStatus),
    /// Written, verified and approved.
    Available(&'a Package),
}

/// The phases of one install, as [`sequence`] drives them. `install::Real` is the device's
/// (the lease, the package, the TPM, the slots, the bootloader); the unit tests record
/// the order with no I/O.
pub(super) trait Phases {
    /// What authentication yields; `write` streams it.
    type Authenticated;
    /// Hold the package still (a read lease).
    fn lease(&mut self) -> Result<(), InstallError>;
    /// Phase 1: signature, chain, structure, the images for this device, and every byte
    /// that can be checked ahead.
    fn authenticate(&mut self) -> Result<Self::Authenticated, InstallError>;
    /// Phase 2: the device's rules (pure, [`admit::admit`]).
    fn admit(&mut self, a: &Self::Authenticated) -> Result<admit::Admission, InstallError>;
    /// Phase 3: the target leaves the policy and is marked bad; whether measured boot
    /// was prepared.
    fn prepare(&mut self) -> Result<bool, InstallError>;
    /// Phase 4: every image into its slot, verified as it streams.
    fn write(&mut self, a: Self::Authenticated) -> Result<Package, InstallError>;
    /// The lease still holds: nobody opened the package for writing meanwhile.
    fn still_leased(&mut self) -> Result<(), InstallError>;
    /// Phase 5: the target's reference values into the measured-boot policy.
    fn approve(&mut self, measured: bool, admission: admit::Admission) -> Result<(), InstallError>;
    /// `[handlers] post-install`: after approval, before the switch.
    fn post_install(&mut self, pkg: &Package) -> Result<(), InstallError>;
    /// Record the target's status.
    fn record(&mut self, r: SlotRecord<'_>);
    /// Phase 6: the pending confirmation on disk, then the bootloader's switch.
    fn switch(&mut self, pkg: &Package) -> Result<(), InstallError>;
}

/// The phases in order. Nothing is changed before `prepare`, so a package refused by
/// `authenticate` or `admit` leaves the device as it was; after `prepare`, a failure
/// records the target as failed and the booted slot stays primary; `switch` comes last.
pub(super) fn sequence<P: Phases>(p: &mut P, activate: bool) -> Result<Package, InstallError> {
    p.lease()?;
    let authenticated = p.authenticate()?;
    let admission = p.admit(&authenticated)?;
    let measured = p.prepare()?;
    let pkg = match p.write(authenticated) {
        Ok(pkg) => pkg,
        Err(e) => {
            p.record(SlotRecord::Failed(match e.fault() {
                CwmpFault::InternalError => FirmwareStatus::InstallationFailed,
                _ => FirmwareStatus::ValidationFailed,
            }));
            return Err(e);
        }
    };
    if let Err(e) = p.still_leased() {
        p.record(SlotRecord::Failed(FirmwareStatus::ValidationFailed));
        return Err(e);
    }
    if let Err(e) = p.approve(measured, admission) {
        p.record(SlotRecord::Failed(FirmwareStatus::InstallationFailed));
        return Err(e);
    }
    if let Err(e) = p.post_install(&pkg) {
        p.record(SlotRecord::Failed(FirmwareStatus::InstallationFailed));
        return Err(e);
    }
    p.record(SlotRecord::Available(&pkg));
    if activate {
        p.switch(&pkg)?;
    }
    Ok(pkg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the phases as they run; fails the one named in `fail`.
    #[derive(Default)]
    struct Recorder {
        fail: Option<&'static str>,
        fail_with: Option<fn() -> InstallError>,
        log: Vec<String>,
    }

    fn refused() -> InstallError {
        InstallError::Refused(admit::Refusal::Format("plain"))
    }

    impl Recorder {
        fn step(&mut self, name: &'static str) -> Result<(), InstallError> {
            self.log.push(name.into());
            match self.fail {
                Some(f) if f == name => Err(self.fail_with.map_or_else(refused, |f| f())),
                _ => Ok(()),
            }
        }
    }

    fn package() -> Package {
        Package {
            format: crate::package::Format::Verity,
            compatible: "c".into(),
            version: None,
            description: None,
            build: None,
            security_version: None,
            images: Vec::new(),
            meta: Default::default(),
            signers: Vec::new(),
            constraints: Default::default(),
            hooks: None,
            handler: None,
        }
    }

    impl Phases for Recorder {
        type Authenticated = ();
        fn lease(&mut self) -> Result<(), InstallError> {
            self.step("lease")
        }
        fn authenticate(&mut self) -> Result<(), InstallError> {
            self.step("authenticate")
        }
        fn admit(&mut self, _: &()) -> Result<admit::Admission, InstallError> {
            self.step("admit").map(|_| admit::Admission { reference_values: None })
        }
        fn prepare(&mut self) -> Result<bool, InstallError> {
            self.step("prepare").map(|_| true)
        }
        fn write(&mut self, _: ()) -> Result<Package, InstallError> {
            self.step("write").map(|_| package())
        }
        fn still_leased(&mut self) -> Result<(), InstallError> {
            self.step("still-leased")
        }
        fn approve(&mut self, measured: bool, _: admit::Admission) -> Result<(), InstallError> {
            assert!(measured, "prepare's answer reaches approve");
            self.step("approve")
        }
        fn post_install(&mut self, _: &Package) -> Result<(), InstallError> {
            self.step("post-install")
        }
        fn record(&mut self, r: SlotRecord<'_>) {
            self.log.push(match r {
                SlotRecord::Failed(s) => format!("record {s:?}"),
                SlotRecord::Available(_) => "record Available".into(),
            });
        }
        fn switch(&mut self, _: &Package) -> Result<(), InstallError> {
            self.step("switch")
        }
    }

    /// How a phase fails, when not as a refusal.
    type Failure = Option<fn() -> InstallError>;

    fn run_with(fail: Option<&'static str>, fail_with: Failure, activate: bool) -> Vec<String> {
        let mut r = Recorder { fail, fail_with, log: Vec::new() };
        let result = sequence(&mut r, activate);
        assert_eq!(result.is_ok(), fail.is_none(), "{:?}", r.log);
        r.log
    }

    #[test]
    fn the_phases_run_in_order_and_the_switch_comes_last() {
        let all = [
            "lease",
            "authenticate",
            "admit",
            "prepare",
            "write",
            "still-leased",
            "approve",
            "post-install",
            "record Available",
        ];
        let mut with_switch = all.to_vec();
        with_switch.push("switch");
        assert_eq!(run_with(None, None, true), with_switch);
        // "6 Stored Firmware Image": installed, not switched.
        assert_eq!(run_with(None, None, false), all);
    }

    #[test]
    fn a_refusal_before_prepare_changes_nothing() {
        for (phase, n) in [("lease", 1), ("authenticate", 2), ("admit", 3)] {
            let log = run_with(Some(phase), None, true);
            assert_eq!(log.len(), n, "{phase}: {log:?}");
            assert!(!log.iter().any(|s| s == "prepare" || s.starts_with("record") || s == "switch"), "{log:?}");
        }
    }

    #[test]
    fn a_failure_after_prepare_records_the_target_failed_and_never_switches() {
        let internal = || InstallError::Variant("x".into());
        let cases: [(&str, Failure, &str); 6] = [
            ("prepare", None, ""),
            ("write", None, "record ValidationFailed"),
            ("write", Some(internal), "record InstallationFailed"),
            ("still-leased", None, "record ValidationFailed"),
            ("approve", None, "record InstallationFailed"),
            ("post-install", None, "record InstallationFailed"),
        ];
        for (phase, fail_with, recorded) in cases {
            let log = run_with(Some(phase), fail_with, true);
            assert!(!log.iter().any(|s| s == "switch" || s == "record Available"), "{phase}: {log:?}");
            let last = log.last().unwrap();
            if recorded.is_empty() {
                assert_eq!(last, phase, "{log:?}");
            } else {
                assert_eq!(last, recorded, "{phase}: {log:?}");
            }
        }
        // A failing switch comes after the target was recorded available.
        let log = run_with(Some("switch"), None, true);
        assert_eq!(&log[log.len() - 2..], ["record Available", "switch"]);
    }
}
