//! The TPM commands tss-esapi 7.7.0 lacks, through the raw ESAPI it re-exports.
//!
//! Unsafe FFI, kept here (the crate's other unsafe spots are `lease.rs` and the CLI's
//! SIGPIPE reset, each a single libc call). Each call builds its own ESYS context from the TCTI
//! string, runs its commands, and tears everything down (handles flushed, context
//! finalized) on every path. Delete this module when tss-esapi 8 builds against the
//! target's tpm2-tss (it has `nv_write_lock` and `policy_authorize_nv`).
//!
//! TPM2_PolicyAuthorizeNV must run in the same ESYS context as the policy session it
//! extends, and tss-esapi 7.7 does not expose its context: so the whole unseal (primary,
//! load, policy session, unseal) happens here.

use std::ffi::CString;
use std::ptr;
use tss_esapi::tss2_esys::{
    Esys_CreatePrimary, Esys_Finalize, Esys_FlushContext, Esys_Free, Esys_Initialize, Esys_Load, Esys_NV_WriteLock,
    Esys_PolicyAuthorizeNV, Esys_PolicyGetDigest, Esys_PolicyOR, Esys_PolicyPCR, Esys_StartAuthSession,
    Esys_TRSess_SetAttributes, Esys_TR_Close, Esys_TR_FromTPMPublic, Esys_TR_GetName, Esys_TR_SetAuth, Esys_Unseal,
    Tss2_TctiLdr_Finalize, Tss2_TctiLdr_Initialize, ESYS_CONTEXT, ESYS_TR, ESYS_TR_NONE, ESYS_TR_PASSWORD,
    ESYS_TR_RH_OWNER, TPM2B_AUTH, TPM2B_DATA, TPM2B_DIGEST, TPM2B_NAME, TPM2B_PRIVATE, TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE, TPM2B_SENSITIVE_DATA, TPM2_SE, TPMA_SESSION, TPML_DIGEST, TPML_PCR_SELECTION, TPMT_SYM_DEF,
    TSS2_RC, TSS2_TCTI_CONTEXT,
};

/// `(response code if the TPM or ESAPI answered, message)`.
pub type RawError = (Option<TSS2_RC>, String);

fn rc_err(what: &str, rc: TSS2_RC) -> RawError {
    (Some(rc), format!("{what}: {} ({rc:#x})", tss_esapi::constants::response_code::Tss2ResponseCode::from(rc)))
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

/// A transient handle (object or session), flushed on drop.
struct Flushed<'a> {
    e: &'a Esys,
    h: ESYS_TR,
}

impl Drop for Flushed<'_> {
    fn drop(&mut self) {
        // SAFETY: h is a live handle of this context, flushed exactly once here.
        unsafe {
            Esys_FlushContext(self.e.esys, self.h);
        }
    }
}

fn set_owner_auth(e: &Esys, owner_auth: &[u8]) -> Result<(), RawError> {
    let mut auth = TPM2B_AUTH { size: 0, buffer: [0; 64] };
    if owner_auth.len() > auth.buffer.len() {
        return Err((None, "owner authorization longer than 64 bytes".into()));
    }
    auth.size = owner_auth.len() as u16;
    auth.buffer[..owner_auth.len()].copy_from_slice(owner_auth);
    // SAFETY: e.esys is a live context; `auth` outlives the call (ESAPI copies it).
    let rc = unsafe { Esys_TR_SetAuth(e.esys, ESYS_TR_RH_OWNER, &auth) };
    if rc != 0 {
        return Err(rc_err("setting owner authorization", rc));
    }
    Ok(())
}

fn nv_handle(e: &Esys, index: u32) -> Result<ESYS_TR, RawError> {
    let mut nv: ESYS_TR = ESYS_TR_NONE;
    // SAFETY: live context; `nv` is a valid out-location.
    let rc = unsafe { Esys_TR_FromTPMPublic(e.esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &mut nv) };
    if rc != 0 {
        return Err(rc_err("reading the policy index", rc));
    }
    Ok(nv)
}

/// A session with SHA-256 and AES-128-CFB parameter encryption, salted to `salt_key`
/// (`ESYS_TR_NONE`: unsalted), unbound, with `attributes` (TPMA_SESSION).
fn session(e: &Esys, kind: TPM2_SE, salt_key: ESYS_TR, attributes: TPMA_SESSION) -> Result<Flushed<'_>, RawError> {
    use tss_esapi::constants::tss::{TPM2_ALG_AES, TPM2_ALG_CFB, TPM2_ALG_SHA256};
    // SAFETY: an all-zero TPMT_SYM_DEF is a valid value (plain integers and unions of integers).
    let mut sym: TPMT_SYM_DEF = unsafe { std::mem::zeroed() };
    sym.algorithm = TPM2_ALG_AES;
    sym.keyBits.aes = 128;
    sym.mode.aes = TPM2_ALG_CFB;
    let mut h: ESYS_TR = ESYS_TR_NONE;
    // SAFETY: live context; pointers are valid for the call; a null nonce lets ESAPI pick one.
    let rc = unsafe {
        Esys_StartAuthSession(
            e.esys,
            salt_key,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            ptr::null(),
            kind,
            &sym,
            TPM2_ALG_SHA256,
            &mut h,
        )
    };
    if rc != 0 {
        return Err(rc_err("StartAuthSession", rc));
    }
    let s = Flushed { e, h };
    // SAFETY: live session handle of this context.
    let rc = unsafe { Esys_TRSess_SetAttributes(e.esys, s.h, attributes, 0xff) };
    if rc != 0 {
        return Err(rc_err("setting session attributes", rc));
    }
    Ok(s)
}

/// A policy (or trial) session: unsalted for a trial (it only computes a digest), salted
/// to `salt_key` for a real one, so the Unseal response can be encrypted.
fn policy_session(e: &Esys, trial: bool, salt_key: ESYS_TR) -> Result<Flushed<'_>, RawError> {
    use tss_esapi::constants::tss::{TPM2_SE_POLICY, TPM2_SE_TRIAL, TPMA_SESSION_CONTINUESESSION};
    let kind: TPM2_SE = if trial { TPM2_SE_TRIAL } else { TPM2_SE_POLICY };
    session(e, kind, if trial { ESYS_TR_NONE } else { salt_key }, TPMA_SESSION_CONTINUESESSION)
}

/// The salt key (the primary of `template` under the endorsement hierarchy, empty
/// authorization), its name compared with `pinned`, and an HMAC session salted to it.
/// The owner authorization is set as the HMAC key for owner commands in that session:
/// it never crosses the bus.
fn salted<'a>(
    e: &'a Esys,
    owner_auth: &[u8],
    template: &TPM2B_PUBLIC,
    pinned: &[u8],
) -> Result<(Flushed<'a>, Flushed<'a>), RawError> {
    use tss_esapi::constants::tss::{TPM2_SE_HMAC, TPMA_SESSION_CONTINUESESSION};
    use tss_esapi::tss2_esys::ESYS_TR_RH_ENDORSEMENT;
    set_owner_auth(e, owner_auth)?;
    let primary = create_primary(e, ESYS_TR_RH_ENDORSEMENT, ESYS_TR_PASSWORD, template)?;
    let mut name: *mut TPM2B_NAME = ptr::null_mut();
    // SAFETY: live handle; ESAPI allocates `name`, freed below with Esys_Free.
    let rc = unsafe { Esys_TR_GetName(e.esys, primary.h, &mut name) };
    if rc != 0 {
        return Err(rc_err("reading the salt key's name", rc));
    }
    // SAFETY: name is a valid TPM2B_NAME from ESAPI; copied, then freed once.
    let got = unsafe {
        let v = &*name;
        let n = v.name[..(v.size as usize).min(v.name.len())].to_vec();
        Esys_Free(name.cast());
        n
    };
    if got != pinned {
        return Err((None, "the TPM's salt key is not the pinned one (another TPM or an interposer)".into()));
    }
    let s = session(e, TPM2_SE_HMAC, primary.h, TPMA_SESSION_CONTINUESESSION)?;
    Ok((primary, s))
}

/// TPM2_CreatePrimary of `template` under `hierarchy`, authorized by `auth_session`.
fn create_primary<'a>(
    e: &'a Esys,
    hierarchy: ESYS_TR,
    auth_session: ESYS_TR,
    template: &TPM2B_PUBLIC,
) -> Result<Flushed<'a>, RawError> {
    // SAFETY: zeroed TPM2B_SENSITIVE_CREATE is the empty sensitive (no auth, no data).
    let sensitive: TPM2B_SENSITIVE_CREATE = unsafe { std::mem::zeroed() };
    // SAFETY: zeroed TPM2B_DATA / TPML_PCR_SELECTION are the empty values (SAPI wants
    // them present).
    let outside: TPM2B_DATA = unsafe { std::mem::zeroed() };
    let creation_pcrs: TPML_PCR_SELECTION = unsafe { std::mem::zeroed() };
    let mut primary: ESYS_TR = ESYS_TR_NONE;
    // SAFETY: live context; all inputs point to initialized structures that outlive the
    // call; optional outputs are null (not wanted).
    let rc = unsafe {
        Esys_CreatePrimary(
            e.esys,
            hierarchy,
            auth_session,
            ESYS_TR_NONE,
            ESYS_TR_NONE,
            &sensitive,
            template,
            &outside,
            &creation_pcrs,
            &mut primary,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if rc != 0 {
        return Err(rc_err("CreatePrimary", rc));
    }
    Ok(Flushed { e, h: primary })
}

/// TPM2_PolicyAuthorizeNV(index) on `session`, reading the index with its own (empty)
/// authorization.
fn authorize_nv(e: &Esys, session: ESYS_TR, index: u32) -> Result<(), RawError> {
    let mut nv = nv_handle(e, index)?;
    // SAFETY: live context and handles; the NV index authorizes its own read (AUTHREAD).
    let rc = unsafe {
        let rc = Esys_PolicyAuthorizeNV(e.esys, nv, nv, session, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE);
        Esys_TR_Close(e.esys, &mut nv);
        rc
    };
    if rc != 0 {
        return Err(rc_err("PolicyAuthorizeNV", rc));
    }
    Ok(())
}

/// The digest of a trial session after TPM2_PolicyAuthorizeNV(index).
pub fn trial_policy_authorize_nv(tcti: &str, index: u32) -> Result<[u8; 32], RawError> {
    let e = Esys::open(tcti)?;
    let s = policy_session(&e, true, ESYS_TR_NONE)?;
    authorize_nv(&e, s.h, index)?;
    let mut d: *mut TPM2B_DIGEST = ptr::null_mut();
    // SAFETY: live session; ESAPI allocates `d`, freed below with Esys_Free.
    let rc = unsafe { Esys_PolicyGetDigest(e.esys, s.h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &mut d) };
    if rc != 0 {
        return Err(rc_err("PolicyGetDigest", rc));
    }
    // SAFETY: d is a valid TPM2B_DIGEST from ESAPI; read, then freed once.
    let out = unsafe {
        let v = &*d;
        let r = <[u8; 32]>::try_from(&v.buffer[..(v.size as usize).min(v.buffer.len())]);
        Esys_Free(d.cast());
        r
    };
    out.map_err(|_| (None, "policy digest is not 32 bytes".into()))
}

/// What an unseal needs, as TPM structures.
pub struct UnsealInput {
    /// The primary (storage) key's template, created under the owner hierarchy.
    pub primary: TPM2B_PUBLIC,
    /// The sealed object.
    pub public: TPM2B_PUBLIC,
    /// Its private part (encrypted by the primary).
    pub private: TPM2B_PRIVATE,
    /// The policy index.
    pub index: u32,
    /// PCR selections to try, each with the PolicyOR branch list that follows it.
    pub attempts: Vec<(TPML_PCR_SELECTION, TPML_DIGEST)>,
    /// The pinned name of the primary created from `primary` (the salt key).
    pub salt_key_name: Vec<u8>,
}

/// Unseal: PolicyPCR(current PCRs) -> PolicyOR(branches) -> PolicyAuthorizeNV(index) ->
/// Unseal. Each selection in `attempts` is tried in a fresh session until one passes.
pub fn unseal(tcti: &str, owner_auth: &[u8], input: &UnsealInput) -> Result<Vec<u8>, Unsealing> {
    let setup = Unsealing::Setup;
    use tss_esapi::constants::tss::{TPMA_SESSION_CONTINUESESSION, TPMA_SESSION_ENCRYPT};
    let e = Esys::open(tcti).map_err(setup)?;
    let (salt, hmac) = salted(&e, owner_auth, &input.primary, &input.salt_key_name).map_err(setup)?;
    // The storage primary the object was sealed under (owner hierarchy).
    let primary = create_primary(&e, ESYS_TR_RH_OWNER, hmac.h, &input.primary).map_err(setup)?;
    let mut obj: ESYS_TR = ESYS_TR_NONE;
    // SAFETY: live handles; inputs outlive the call. The primary has an empty auth value,
    // proven in the salted session.
    let rc = unsafe {
        Esys_Load(e.esys, primary.h, hmac.h, ESYS_TR_NONE, ESYS_TR_NONE, &input.private, &input.public, &mut obj)
    };
    if rc != 0 {
        return Err(setup(rc_err("Load of the sealed object", rc)));
    }
    let obj = Flushed { e: &e, h: obj };
    let mut last = (None, "no PCR selection to try".to_string());
    for (selection, branches) in &input.attempts {
        let s = policy_session(&e, false, salt.h).map_err(setup)?;
        // SAFETY: zeroed TPM2B_DIGEST is the empty digest: the TPM uses the current PCRs.
        let empty: TPM2B_DIGEST = unsafe { std::mem::zeroed() };
        // SAFETY: live session; inputs outlive the calls.
        let rc = unsafe { Esys_PolicyPCR(e.esys, s.h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &empty, selection) };
        if rc != 0 {
            last = rc_err("PolicyPCR", rc);
            if rc & TSS2_RC_LAYER_MASK != 0 {
                return Err(setup(last));
            }
            continue;
        }
        // SAFETY: as above.
        let rc = unsafe { Esys_PolicyOR(e.esys, s.h, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, branches) };
        if rc != 0 {
            last = rc_err("PolicyOR (the PCRs match no approved branch)", rc);
            if rc & TSS2_RC_LAYER_MASK != 0 {
                return Err(setup(last));
            }
            continue;
        }
        if let Err(err) = authorize_nv(&e, s.h, input.index) {
            // Only the TPM refusing the policy is "not approved"; ESAPI's own errors and
            // a missing index are "could not check".
            if err.0.is_none_or(|rc| rc & TSS2_RC_LAYER_MASK != 0) || err.1.starts_with("reading the policy index") {
                return Err(setup(err));
            }
            last = err;
            continue;
        }
        // The secret leaves the TPM encrypted with the salted policy session's key.
        // SAFETY: live session handle of this context.
        let rc = unsafe {
            Esys_TRSess_SetAttributes(e.esys, s.h, TPMA_SESSION_CONTINUESESSION | TPMA_SESSION_ENCRYPT, 0xff)
        };
        if rc != 0 {
            return Err(setup(rc_err("setting session attributes", rc)));
        }
        let mut out: *mut TPM2B_SENSITIVE_DATA = ptr::null_mut();
        // SAFETY: live handles; ESAPI allocates `out`, freed below.
        let rc = unsafe { Esys_Unseal(e.esys, obj.h, s.h, ESYS_TR_NONE, ESYS_TR_NONE, &mut out) };
        if rc != 0 {
            last = rc_err("Unseal", rc);
            if rc & TSS2_RC_LAYER_MASK != 0 {
                // Not the TPM's answer: ESAPI's (a response HMAC that does not verify).
                return Err(setup(last));
            }
            continue;
        }
        // SAFETY: out is a valid TPM2B_SENSITIVE_DATA from ESAPI; copied, then freed once.
        let data = unsafe {
            let v = &*out;
            let d = v.buffer[..(v.size as usize).min(v.buffer.len())].to_vec();
            Esys_Free(out.cast());
            d
        };
        return Ok(data);
    }
    Err(Unsealing::Refused(last))
}

/// Bits 16..24 of a TSS2_RC name the layer that answered; 0 is the TPM itself.
const TSS2_RC_LAYER_MASK: TSS2_RC = 0x00ff_0000;

/// Why an unseal failed.
pub enum Unsealing {
    /// Before or around the policy: the connection, the salt key, the sealed object, or
    /// an answer that is not the TPM's ("could not check").
    Setup(RawError),
    /// The TPM refused the policy for every PCR selection: this measurement is not
    /// approved.
    Refused(RawError),
}

/// TPM2_NV_WriteLock on `index` with owner authorization `owner_auth`, in a session
/// salted to the storage primary of `template` whose name must be `salt_key_name`.
pub fn nv_write_lock(
    tcti: &str,
    owner_auth: &[u8],
    template: &TPM2B_PUBLIC,
    salt_key_name: &[u8],
    index: u32,
) -> Result<(), RawError> {
    let e = Esys::open(tcti)?;
    let (primary, hmac) = salted(&e, owner_auth, template, salt_key_name)?;
    drop(primary);
    let mut nv: ESYS_TR = ESYS_TR_NONE;
    // SAFETY: e.esys is a live ESYS context; `nv` outlives the calls; the owner's
    // authorization is the HMAC key of the salted session (set by `salted`).
    unsafe {
        let rc = Esys_TR_FromTPMPublic(e.esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &mut nv);
        if rc != 0 {
            return Err(rc_err("reading the index", rc));
        }
        let rc = Esys_NV_WriteLock(e.esys, ESYS_TR_RH_OWNER, nv, hmac.h, ESYS_TR_NONE, ESYS_TR_NONE);
        Esys_TR_Close(e.esys, &mut nv);
        if rc != 0 {
            return Err(rc_err("NV_WriteLock", rc));
        }
    }
    Ok(())
}
