//! The TPM 2.0: the only module that talks to tss-esapi.
//!
//! What the agent needs from the TPM is NV storage: one index per operator root
//! certificate (R3: roots in the Trusted Environment), a monotonic counter for
//! anti-rollback, and (step 4) the measured-boot policy index. All of it goes through
//! [`Tpm`], which one task owns ([`owner::TpmOwner`]): swtpm serves one connection at a
//! time, and a real resource manager gains nothing from concurrent sessions here.
//!
//! NV I/O is chunked by the TPM's own `TPM_PT_NV_BUFFER_MAX`, and index sizes are checked
//! against its `TPM_PT_NV_INDEX_MAX` before anything is defined.

pub mod owner;
pub mod policy;
mod raw;
mod seal;
mod session;
pub mod tcti;

use session::Protect;

use std::str::FromStr;
use thiserror::Error;
use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::constants::response_code::Tss2ResponseCodeKind;
use tss_esapi::constants::{CapabilityType, NvIndexType, PropertyTag};
use tss_esapi::handles::{AuthHandle, NvIndexHandle, NvIndexTpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth, Provision};
use tss_esapi::structures::{Auth, CapabilityData, MaxNvBuffer, NvPublicBuilder};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::Context;

/// The kernel resource manager, the default TCTI.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// How to reach the TPM and authorize owner operations.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TpmConfig {
    /// TCTI string (`device:/dev/tpmrm0`, `swtpm:host=127.0.0.1,port=2321`, ...; checked by [`tcti::parse`]).
    pub tcti: String,
    /// Owner hierarchy authorization (empty on a fresh TPM). Sent only as an HMAC key.
    pub owner_auth: Vec<u8>,
    /// Where the salt key's name is pinned (hex of the TPM2B_NAME: nameAlg || SHA-256 of
    /// its TPMT_PUBLIC). Written at the first session (the factory's provisioning), then
    /// every session checks the key against it. `None`: no pin (library use, tests of
    /// the NV layer).
    pub salt_key_pin: Option<std::path::PathBuf>,
}

impl Default for TpmConfig {
    fn default() -> Self {
        Self { tcti: DEFAULT_TCTI.into(), owner_auth: Vec::new(), salt_key_pin: None }
    }
}

/// A TPM failure. `Unreachable` and `Tpm` mean "could not check", never "rejected".
#[derive(Debug, Error)]
pub enum TpmError {
    /// The TCTI could not be loaded or the TPM did not answer.
    #[error("TPM unreachable via '{tcti}': {why}")]
    Unreachable {
        /// TCTI string.
        tcti: String,
        /// Cause.
        why: String,
    },
    /// The TPM answered a command with an error.
    #[error("TPM {op} of index {index:#010x} failed: {why}")]
    Command {
        /// Operation.
        op: &'static str,
        /// NV index (0 when none).
        index: u32,
        /// TPM response.
        why: String,
        /// The response, classified.
        kind: Option<Tss2ResponseCodeKind>,
    },
    /// Data does not fit an NV index of this TPM.
    #[error("{what} of {size} bytes does not fit an NV index of this TPM (at most {max} bytes)")]
    TooLarge {
        /// What was to be stored.
        what: String,
        /// Its size.
        size: usize,
        /// TPM_PT_NV_INDEX_MAX.
        max: usize,
    },
    /// No NV index at that handle.
    #[error("NV index {0:#010x} is not defined")]
    NotDefined(u32),
    /// The TPM's salt key is not the one pinned at provisioning: another TPM (or one whose
    /// endorsement seed was changed), or an interposer answering in its place. Nothing is
    /// read or written through it ("could not check").
    #[error("the TPM's salt key {got} is not the key pinned in {pin} ({pinned}): another TPM or an interposer on its bus; after a deliberate change of TPM, remove the pin and provision again")]
    SaltKey {
        /// The pin file.
        pin: String,
        /// The pinned name (hex).
        pinned: String,
        /// The name the TPM's key has now (hex).
        got: String,
    },
    /// The pin file cannot be read or written.
    #[error("salt key pin {pin}: {why}")]
    Pin {
        /// The pin file.
        pin: String,
        /// Cause.
        why: String,
    },
}

impl crate::fault::Fault for TpmError {
    fn kind(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "tpm-unreachable",
            _ => "tpm",
        }
    }
    /// The Trusted Environment failed or cannot be trusted: could not check.
    fn fault(&self) -> crate::fault::CwmpFault {
        crate::fault::CwmpFault::InternalError
    }
}

impl TpmError {
    /// True when the TPM refused because the index is write-locked.
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Command { kind: Some(Tss2ResponseCodeKind::NvLocked), .. })
    }
}

/// What an NV index is for; decides its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvKind {
    /// Readable by anyone (empty auth), writable with owner authorization, lockable
    /// until deleted (WRITEDEFINE), outside dictionary-attack lockout.
    Data,
    /// The same, as an NT_COUNTER: it can only go up.
    Counter,
    /// The measured-boot policy index: readable by anyone (PolicyAuthorizeNV reads it),
    /// written by the owner, only as a whole (WRITEALL: each update is atomic), never
    /// locked.
    Policy,
}

/// Public facts about a defined index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvInfo {
    /// Data size in bytes.
    pub size: usize,
    /// Written at least once.
    pub written: bool,
    /// Write-locked (NV_WriteLock with WRITEDEFINE: until deleted).
    pub write_locked: bool,
    /// A counter index.
    pub counter: bool,
}

/// The TPM limits that shape NV I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// TPM_PT_NV_INDEX_MAX.
    pub index_max: usize,
    /// TPM_PT_NV_BUFFER_MAX.
    pub buffer_max: usize,
}

/// A raw FFI failure as a [`TpmError`].
fn raw_err(op: &'static str, index: u32) -> impl Fn(raw::RawError) -> TpmError {
    move |(rc, why)| TpmError::Command {
        op,
        index,
        why,
        kind: rc.and_then(|rc| tss_esapi::constants::response_code::Tss2ResponseCode::from(rc).kind()),
    }
}

/// The storage primary sealed objects live under: ECC P-256, AES-128-CFB, the usual
/// SRK template (TCG Provisioning Guidance). Created anew from the owner seed each time.
fn storage_primary_template() -> tss_esapi::Result<tss_esapi::structures::Public> {
    use tss_esapi::attributes::ObjectAttributesBuilder;
    use tss_esapi::interface_types::algorithm::PublicAlgorithm;
    use tss_esapi::interface_types::ecc::EccCurve;
    use tss_esapi::structures::{
        EccPoint, EccScheme, KeyDerivationFunctionScheme, PublicBuilder, PublicEccParametersBuilder,
        SymmetricDefinitionObject,
    };
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new()
                .with_symmetric(SymmetricDefinitionObject::AES_128_CFB)
                .with_ecc_scheme(EccScheme::Null)
                .with_curve(EccCurve::NistP256)
                .with_key_derivation_function_scheme(KeyDerivationFunctionScheme::Null)
                .with_is_decryption_key(true)
                .with_restricted(true)
                .build()?,
        )
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
}

/// An open TPM. Owned by one task; see [`owner::TpmOwner`].
///
/// Every command that carries authorization or data that matters runs in one salted HMAC
/// session (TPM 2.0 Part 1, 19.6.14 and 21): its salt is encrypted to the storage primary,
/// key (an endorsement-hierarchy primary) whose name is pinned
/// ([`TpmConfig::salt_key_pin`]), so only this agent and the TPM
/// know the session key. The TPM's responses carry an HMAC that ESAPI checks (a changed
/// byte on the bus is an error, not a value), NV data and the sealed secret travel
/// AES-128-CFB encrypted, and the owner authorization is an HMAC key, never a password
/// on the bus.
pub struct Tpm {
    conf: TpmConfig,
    ctx: Option<Context>,
    limits: Option<Limits>,
    session: Option<tss_esapi::interface_types::session_handles::AuthSession>,
    /// The session's TPM handle, to flush it from a fresh context when ESAPI's went into
    /// its error state (it does after a response that fails verification).
    session_tpm: Option<u32>,
    pinned: Option<Vec<u8>>,
}

fn cmd_err(op: &'static str, index: u32) -> impl Fn(tss_esapi::Error) -> TpmError {
    move |e| TpmError::Command {
        op,
        index,
        why: e.to_string(),
        kind: match e {
            tss_esapi::Error::Tss2Error(rc) => rc.kind(),
            _ => None,
        },
    }
}

impl Drop for Tpm {
    fn drop(&mut self) {
        self.end_session();
    }
}

impl Tpm {
    /// Connect.
    pub fn open(conf: TpmConfig) -> Result<Self, TpmError> {
        let mut t = Self { conf, ctx: None, limits: None, session: None, session_tpm: None, pinned: None };
        t.ctx()?;
        Ok(t)
    }

    /// Close the ESAPI context (and the session with it): the raw FFI opens its own
    /// connection, and swtpm serves one client at a time.
    fn disconnect(&mut self) {
        self.end_session();
        self.ctx = None;
    }

    fn unreachable(&self, why: impl ToString) -> TpmError {
        TpmError::Unreachable { tcti: self.conf.tcti.clone(), why: why.to_string() }
    }

    fn ctx(&mut self) -> Result<&mut Context, TpmError> {
        if self.ctx.is_none() {
            let name = TctiNameConf::from_str(&self.conf.tcti).map_err(|e| self.unreachable(e))?;
            let mut ctx = Context::new(name).map_err(|e| self.unreachable(e))?;
            let auth = Auth::try_from(self.conf.owner_auth.clone()).map_err(|e| self.unreachable(e))?;
            ctx.tr_set_auth(AuthHandle::Owner.into(), auth).map_err(|e| self.unreachable(e))?;
            self.ctx = Some(ctx);
        }
        Ok(self.ctx.as_mut().expect("just set"))
    }

    /// The TPM's NV limits (asked once).
    pub fn limits(&mut self) -> Result<Limits, TpmError> {
        if let Some(l) = self.limits {
            return Ok(l);
        }
        let ctx = self.ctx()?;
        let mut get = |tag: PropertyTag| -> Result<usize, TpmError> {
            let (data, _) = ctx
                .get_capability(CapabilityType::TpmProperties, tag.into(), 1)
                .map_err(cmd_err("GetCapability", 0))?;
            match data {
                CapabilityData::TpmProperties(list) => list.find(tag).map(|p| p.value() as usize).ok_or_else(|| {
                    cmd_err("GetCapability", 0)(tss_esapi::Error::WrapperError(
                        tss_esapi::WrapperErrorKind::WrongValueFromTpm,
                    ))
                }),
                _ => Err(cmd_err("GetCapability", 0)(tss_esapi::Error::WrapperError(
                    tss_esapi::WrapperErrorKind::WrongValueFromTpm,
                ))),
            }
        };
        let l = Limits { index_max: get(PropertyTag::NvIndexMax)?, buffer_max: get(PropertyTag::NvBufferMax)? };
        self.limits = Some(l);
        Ok(l)
    }

    fn handle(&mut self, index: u32) -> Result<Option<NvIndexHandle>, TpmError> {
        let tpm_handle = NvIndexTpmHandle::new(index).map_err(cmd_err("handle", index))?;
        match self.protected(Protect::Response, |c| c.tr_from_tpm_public(tpm_handle.into()))? {
            Ok(h) => Ok(Some(h.into())),
            Err(tss_esapi::Error::Tss2Error(rc)) if rc.kind() == Some(Tss2ResponseCodeKind::Handle) => Ok(None),
            Err(e) => Err(cmd_err("ReadPublic", index)(e)),
        }
    }

    fn close(&mut self, h: NvIndexHandle) {
        if let Ok(ctx) = self.ctx() {
            let mut o = h.into();
            let _ = ctx.tr_close(&mut o);
        }
    }

    /// Facts about an index, `None` when it is not defined.
    pub fn nv_info(&mut self, index: u32) -> Result<Option<NvInfo>, TpmError> {
        let Some(h) = self.handle(index)? else { return Ok(None) };
        let r = self.protected(Protect::Response, |c| c.nv_read_public(h));
        self.close(h);
        let (public, _) = r?.map_err(cmd_err("NV_ReadPublic", index))?;
        let a = public.attributes();
        Ok(Some(NvInfo {
            size: public.data_size(),
            written: a.written(),
            write_locked: a.write_locked(),
            counter: a.index_type().is_ok_and(|t| t == NvIndexType::Counter),
        }))
    }

    /// Define an index of `size` bytes (8 for a counter) with the attributes of `kind`.
    pub fn nv_define(&mut self, index: u32, size: usize, kind: NvKind, what: &str) -> Result<(), TpmError> {
        let max = self.limits()?.index_max;
        if size > max {
            return Err(TpmError::TooLarge { what: what.to_string(), size, max });
        }
        let attrs = NvIndexAttributesBuilder::new()
            .with_owner_write(true)
            .with_auth_read(true)
            .with_owner_read(true)
            .with_no_da(true)
            .with_write_define(kind != NvKind::Policy)
            .with_write_all(kind == NvKind::Policy)
            .with_nv_index_type(if kind == NvKind::Counter { NvIndexType::Counter } else { NvIndexType::Ordinary })
            .build()
            .map_err(cmd_err("attributes", index))?;
        let public = NvPublicBuilder::new()
            .with_nv_index(NvIndexTpmHandle::new(index).map_err(cmd_err("handle", index))?)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(attrs)
            .with_data_area_size(if kind == NvKind::Counter { 8 } else { size })
            .build()
            .map_err(cmd_err("NvPublic", index))?;
        let h = self
            .protected(Protect::Command, |c| c.nv_define_space(Provision::Owner, None, public))?
            .map_err(cmd_err("NV_DefineSpace", index))?;
        self.close(h);
        Ok(())
    }

    /// Delete an index (owner authorization).
    pub fn nv_undefine(&mut self, index: u32) -> Result<(), TpmError> {
        let h = self.handle(index)?.ok_or(TpmError::NotDefined(index))?;
        self.protected(Protect::Hmac, |c| c.nv_undefine_space(Provision::Owner, h))?
            .map_err(cmd_err("NV_UndefineSpace", index))
    }

    /// Write `data` at offset 0 in chunks of the TPM's buffer size (owner authorization).
    pub fn nv_write(&mut self, index: u32, data: &[u8]) -> Result<(), TpmError> {
        let chunk = self.limits()?.buffer_max.max(1);
        let h = self.handle(index)?.ok_or(TpmError::NotDefined(index))?;
        let mut r = Ok(());
        for (i, part) in data.chunks(chunk).enumerate() {
            let buf = MaxNvBuffer::try_from(part.to_vec()).map_err(cmd_err("NV_Write", index))?;
            let offset = u16::try_from(i * chunk).map_err(|_| TpmError::TooLarge {
                what: "data".into(),
                size: data.len(),
                max: u16::MAX as usize,
            })?;
            r = self
                .protected(Protect::Command, |c| c.nv_write(NvAuth::Owner, h, buf, offset))
                .and_then(|r| r.map_err(cmd_err("NV_Write", index)));
            if r.is_err() {
                break;
            }
        }
        self.close(h);
        r
    }

    /// Read a whole ordinary index without authorization, in chunks.
    pub fn nv_read(&mut self, index: u32) -> Result<Vec<u8>, TpmError> {
        let info = self.nv_info(index)?.ok_or(TpmError::NotDefined(index))?;
        let chunk = self.limits()?.buffer_max.max(1);
        let h = self.handle(index)?.ok_or(TpmError::NotDefined(index))?;
        let mut out = Vec::with_capacity(info.size);
        let mut r = Ok(());
        while out.len() < info.size {
            let n = chunk.min(info.size - out.len());
            let off = out.len() as u16;
            match self
                .protected(Protect::Response, |c| c.nv_read(NvAuth::NvIndex(h), h, n as u16, off))
                .and_then(|r| r.map_err(cmd_err("NV_Read", index)))
            {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => {
                    r = Err(e);
                    break;
                }
            }
        }
        self.close(h);
        r.map(|_| out)
    }

    /// Read a counter (0 if it was never incremented).
    pub fn nv_read_counter(&mut self, index: u32) -> Result<u64, TpmError> {
        let info = self.nv_info(index)?.ok_or(TpmError::NotDefined(index))?;
        if !info.written {
            return Ok(0);
        }
        let b = self.nv_read(index)?;
        Ok(u64::from_be_bytes(b.try_into().map_err(|_| TpmError::Command {
            op: "NV_Read",
            index,
            why: "counter is not 8 bytes".into(),
            kind: None,
        })?))
    }

    /// Increment a counter by one (owner authorization).
    pub fn nv_increment(&mut self, index: u32) -> Result<(), TpmError> {
        let h = self.handle(index)?.ok_or(TpmError::NotDefined(index))?;
        let r = self
            .protected(Protect::Hmac, |c| c.nv_increment(NvAuth::Owner, h))
            .and_then(|r| r.map_err(cmd_err("NV_Increment", index)));
        self.close(h);
        r
    }

    /// The index's name as the TPM computes it (nameAlg || H(TPMS_NV_PUBLIC)).
    pub fn nv_name(&mut self, index: u32) -> Result<Vec<u8>, TpmError> {
        let h = self.handle(index)?.ok_or(TpmError::NotDefined(index))?;
        let r = self.protected(Protect::Response, |c| c.nv_read_public(h));
        self.close(h);
        Ok(r?.map_err(cmd_err("NV_ReadPublic", index))?.1.value().to_vec())
    }

    /// Lock an index against writes until it is deleted (owner authorization).
    /// tss-esapi 7.7 lacks NV_WriteLock: it goes through the raw FFI in `raw.rs`, on a
    /// context of its own (this one is closed meanwhile: swtpm serves one client).
    pub fn nv_write_lock(&mut self, index: u32) -> Result<(), TpmError> {
        if self.handle(index)?.is_none() {
            return Err(TpmError::NotDefined(index));
        }
        let salt_key_name = self.pinned_name()?;
        self.disconnect();
        let template = storage_primary_template().and_then(|t| t.try_into()).map_err(cmd_err("NV_WriteLock", index))?;
        raw::nv_write_lock(&self.conf.tcti, &self.conf.owner_auth, &template, &salt_key_name, index)
            .map_err(raw_err("NV_WriteLock", index))
    }
}
