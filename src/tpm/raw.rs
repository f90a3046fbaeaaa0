//! The TPM commands tss-esapi 7.7.0 lacks, through the raw ESAPI it re-exports.
//!
//! Unsafe FFI, kept here (the crate's other unsafe spots are `lease.rs` and the CLI's
//! SIGPIPE reset, each a single libc call). Each call builds its own ESYS context from the TCTI
//! string, runs one command with password (owner) authorization, and tears everything
//! down on every path. Delete this module when tss-esapi 8 builds against the target's
//! tpm2-tss (it has `nv_write_lock` and `policy_authorize_nv`).

use std::ffi::CString;
use std::ptr;
use tss_esapi::tss2_esys::{
    Esys_Finalize, Esys_Initialize, Esys_NV_WriteLock, Esys_TR_Close, Esys_TR_FromTPMPublic, Esys_TR_SetAuth,
    Tss2_TctiLdr_Finalize, Tss2_TctiLdr_Initialize, ESYS_CONTEXT, ESYS_TR, ESYS_TR_NONE, ESYS_TR_PASSWORD,
    ESYS_TR_RH_OWNER, TPM2B_AUTH, TSS2_RC, TSS2_TCTI_CONTEXT,
};

/// `(response code if the TPM or ESAPI answered, message)`.
pub type RawError = (Option<TSS2_RC>, String);

fn rc_err(what: &str, rc: TSS2_RC) -> RawError {
    (Some(rc), format!("{what}: {}", tss_esapi::constants::response_code::Tss2ResponseCode::from(rc)))
}

/// An ESYS context on its own TCTI, finalized on drop.
struct Esys {
    tcti: *mut TSS2_TCTI_CONTEXT,
    esys: *mut ESYS_CONTEXT,
}

impl Esys {
    fn open(tcti_conf: &str) -> Result<Self, RawError> {
        let conf = CString::new(tcti_conf).map_err(|_| (None, "TCTI string contains NUL".to_string()))?;
        let mut s = Esys { tcti: ptr::null_mut(), esys: ptr::null_mut() };
        // SAFETY: conf is a valid C string; the out-pointer is a valid, writable location.
        let rc = unsafe { Tss2_TctiLdr_Initialize(conf.as_ptr(), &mut s.tcti) };
        if rc != 0 {
            return Err(rc_err("loading the TCTI", rc));
        }
        // SAFETY: s.tcti is an initialized TCTI context; a null ABI version is allowed.
        let rc = unsafe { Esys_Initialize(&mut s.esys, s.tcti, ptr::null_mut()) };
        if rc != 0 {
            return Err(rc_err("initializing ESAPI", rc)); // Drop finalizes the TCTI
        }
        Ok(s)
    }
}

impl Drop for Esys {
    fn drop(&mut self) {
        // SAFETY: each pointer is either null (skipped) or was initialized by its library
        // call above and is finalized exactly once here.
        unsafe {
            if !self.esys.is_null() {
                Esys_Finalize(&mut self.esys);
            }
            if !self.tcti.is_null() {
                Tss2_TctiLdr_Finalize(&mut self.tcti);
            }
        }
    }
}

/// TPM2_NV_WriteLock on `index` with owner authorization `owner_auth`.
pub fn nv_write_lock(tcti: &str, owner_auth: &[u8], index: u32) -> Result<(), RawError> {
    let e = Esys::open(tcti)?;
    let mut auth = TPM2B_AUTH { size: 0, buffer: [0; 64] };
    if owner_auth.len() > auth.buffer.len() {
        return Err((None, "owner authorization longer than 64 bytes".into()));
    }
    auth.size = owner_auth.len() as u16;
    auth.buffer[..owner_auth.len()].copy_from_slice(owner_auth);
    let mut nv: ESYS_TR = ESYS_TR_NONE;
    // SAFETY: e.esys is a live ESYS context; `auth` and `nv` outlive the calls; the
    // session handles are the documented constants for "password" and "none".
    unsafe {
        let rc = Esys_TR_SetAuth(e.esys, ESYS_TR_RH_OWNER, &auth);
        if rc != 0 {
            return Err(rc_err("setting owner authorization", rc));
        }
        let rc = Esys_TR_FromTPMPublic(e.esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &mut nv);
        if rc != 0 {
            return Err(rc_err("reading the index", rc));
        }
        let rc = Esys_NV_WriteLock(e.esys, ESYS_TR_RH_OWNER, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE);
        Esys_TR_Close(e.esys, &mut nv);
        if rc != 0 {
            return Err(rc_err("NV_WriteLock", rc));
        }
    }
    Ok(())
}
