//! The salted HMAC session every command that matters runs in (TPM 2.0 Part 1, 19.6.14
//! and 21), and the pin of the salt key's name (trust on first use, or at provisioning).

use super::*;

/// What a salted session does for one command besides authenticating it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protect {
    /// HMAC only (commands whose first parameters are not a TPM2B).
    Hmac,
    /// Encrypt the response's first parameter (NV_Read, NV_ReadPublic).
    Response,
    /// Encrypt the command's first parameter (NV_Write, Create's sensitive data).
    Command,
    /// Audit: a response HMAC for a command without authorization whose response
    /// starts with no TPM2B (PCR_Read).
    Audit,
}

/// The TPM handles of the loaded HMAC and policy sessions (TPM_HT_HMAC_SESSION).
pub(super) fn loaded_sessions(ctx: &mut Context) -> Vec<u32> {
    match ctx.get_capability(CapabilityType::Handles, 0x0200_0000, 64) {
        Ok((CapabilityData::Handles(list), _)) => list.iter().map(|h| u32::from(*h)).collect(),
        _ => Vec::new(),
    }
}

pub(super) fn flush_session(ctx: &mut Context, s: tss_esapi::interface_types::session_handles::AuthSession) {
    let _ = ctx.flush_context(tss_esapi::handles::ObjectHandle::from(tss_esapi::handles::SessionHandle::from(s)));
}

impl Tpm {
    /// Flush the salted session. A TPM without a resource manager keeps sessions after
    /// the connection closes and has room for three: [`owner::TpmOwner`] ends the
    /// session after each call, before its result is sent.
    pub fn end_session(&mut self) {
        let (Some(s), tpm_handle) = (self.session.take(), self.session_tpm.take()) else { return };
        let flushed = self.ctx.as_mut().is_some_and(|ctx| {
            ctx.flush_context(tss_esapi::handles::ObjectHandle::from(tss_esapi::handles::SessionHandle::from(s)))
                .is_ok()
        });
        if flushed {
            return;
        }
        // ESAPI refuses every call after a response that failed verification: flush the
        // session by its TPM handle from a new context.
        self.ctx = None;
        let Some(h) = tpm_handle.and_then(|h| tss_esapi::handles::TpmHandle::try_from(h).ok()) else { return };
        if let Ok(ctx) = self.ctx() {
            if let Ok(o) = ctx.tr_from_tpm_public(h) {
                let _ = ctx.flush_context(o);
            }
        }
    }

    /// The salted session, started on first use: the salt key (an ECC P-256 primary under
    /// the endorsement hierarchy, whose seed survives TPM2_Clear and every reboot, as
    /// the endorsement key does) is created, its name checked against the pin, and the
    /// session's salt encrypted to it. The endorsement authorization is empty (TCG EK
    /// Credential Profile), so nothing secret crosses the bus for this.
    pub(super) fn session(&mut self) -> Result<tss_esapi::interface_types::session_handles::AuthSession, TpmError> {
        use tss_esapi::constants::SessionType;
        use tss_esapi::structures::SymmetricDefinition;
        if let Some(s) = self.session {
            return Ok(s);
        }
        let err = cmd_err("StartAuthSession", 0);
        let template = storage_primary_template().map_err(&err)?;
        let ctx = self.ctx()?;
        let start = |ctx: &mut Context, key: Option<tss_esapi::handles::KeyHandle>| {
            ctx.start_auth_session(
                key,
                None,
                None,
                SessionType::Hmac,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .and_then(|s| s.ok_or(tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::WrongValueFromTpm)))
        };
        let primary = ctx
            .execute_with_nullauth_session(|c| {
                c.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
            })
            .map_err(cmd_err("CreatePrimary (salt key)", 0))?;
        let name = ctx.tr_get_name(primary.key_handle.into()).map(|n| n.value().to_vec()).map_err(&err);
        let before = loaded_sessions(ctx);
        let salted = name.and_then(|n| Ok((n, start(ctx, Some(primary.key_handle)).map_err(&err)?)));
        let ours: Vec<u32> = loaded_sessions(ctx).into_iter().filter(|h| !before.contains(h)).collect();
        let _ = ctx.flush_context(primary.key_handle.into());
        let (name, session) = salted?;
        if let Err(e) = self.check_pin(&name) {
            if let Ok(ctx) = self.ctx() {
                flush_session(ctx, session);
            }
            return Err(e);
        }
        self.session = Some(session);
        self.session_tpm = (ours.len() == 1).then(|| ours[0]);
        Ok(session)
    }

    /// The salt key's name, checked against the pin (for the raw FFI's own sessions).
    pub(super) fn pinned_name(&mut self) -> Result<Vec<u8>, TpmError> {
        self.session()?;
        Ok(self.pinned.clone().expect("set by a successful session"))
    }

    /// Compare the salt key's name with the pin; write the pin if there is none yet.
    fn check_pin(&mut self, name: &[u8]) -> Result<(), TpmError> {
        if self.pinned.as_deref() == Some(name) {
            return Ok(());
        }
        let Some(pin) = self.conf.salt_key_pin.clone() else {
            self.pinned = Some(name.to_vec());
            return Ok(());
        };
        let shown = pin.display().to_string();
        let failed = |why: String| TpmError::Pin { pin: shown.clone(), why };
        match crate::fsutil::read_state(&pin) {
            Ok(text) => {
                let pinned = std::str::from_utf8(&text)
                    .ok()
                    .and_then(|t| hex::decode(t.trim()).ok())
                    .ok_or_else(|| {
                        failed(
                            "not a hex TPM2B_NAME (damaged: if the TPM is the one provisioned, remove the file and the next TPM use pins its key again)"
                                .into(),
                        )
                    })?;
                if pinned != name {
                    return Err(TpmError::SaltKey { pin: shown, pinned: hex::encode(&pinned), got: hex::encode(name) });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!("pinning the TPM's salt key {} in {shown}", hex::encode(name));
                let dir = pin.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
                crate::fsutil::private_dir(dir)
                    .and_then(|_| crate::fsutil::write_atomic(&pin, format!("{}\n", hex::encode(name)).as_bytes()))
                    .map_err(|e| failed(e.to_string()))?;
            }
            Err(e) => return Err(failed(e.to_string())),
        }
        self.pinned = Some(name.to_vec());
        Ok(())
    }

    /// Run `f` with the salted session as its first session, protecting as `how` says.
    pub(super) fn protected<T>(
        &mut self,
        how: Protect,
        f: impl FnOnce(&mut Context) -> tss_esapi::Result<T>,
    ) -> Result<tss_esapi::Result<T>, TpmError> {
        use tss_esapi::attributes::SessionAttributesBuilder;
        let s = self.session()?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_continue_session(true)
            .with_encrypt(how == Protect::Response)
            .with_decrypt(how == Protect::Command)
            .with_audit(how == Protect::Audit)
            .build();
        let ctx = self.ctx()?;
        if let Err(e) = ctx.tr_sess_set_attributes(s, attrs, mask) {
            return Ok(Err(e));
        }
        Ok(ctx.execute_with_session(Some(s), f))
    }
}
