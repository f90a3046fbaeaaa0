//! Policy sessions: trial sessions (the TPM's own policy digests, to check the software
//! ones of [`super::policy`]), PCR reads, and sealing a secret to a policy and unsealing it.

use super::*;

impl Tpm {
    /// The digest of a trial session after TPM2_PolicyPCR with the given (expected) PCR
    /// values, SHA-256: the TPM's answer to compare software policy digests with.
    pub fn trial_policy_pcr(&mut self, pcrs: &[(u8, [u8; 32])]) -> Result<[u8; 32], TpmError> {
        use tss_esapi::structures::{Digest as TpmDigest, PcrSelectionListBuilder, PcrSlot};
        let err = cmd_err("PolicyPCR", 0);
        let slots: Vec<PcrSlot> =
            pcrs.iter().map(|(i, _)| PcrSlot::try_from(1u32 << i)).collect::<Result<_, _>>().map_err(&err)?;
        let selection =
            PcrSelectionListBuilder::new().with_selection(HashingAlgorithm::Sha256, &slots).build().map_err(&err)?;
        let values = TpmDigest::try_from(policy::pcr_values_digest(pcrs).to_vec()).map_err(&err)?;
        self.trial(|ctx, s| ctx.policy_pcr(s, values, selection))
    }

    /// The digest of a trial session after TPM2_PolicyOR of `branches`.
    pub fn trial_policy_or(&mut self, branches: &[[u8; 32]]) -> Result<[u8; 32], TpmError> {
        use tss_esapi::structures::{Digest as TpmDigest, DigestList};
        let err = cmd_err("PolicyOR", 0);
        let mut list = DigestList::new();
        for b in branches {
            list.add(TpmDigest::try_from(b.to_vec()).map_err(&err)?).map_err(&err)?;
        }
        self.trial(|ctx, s| ctx.policy_or(s, list))
    }

    pub(super) fn trial(
        &mut self,
        f: impl FnOnce(&mut Context, tss_esapi::interface_types::session_handles::PolicySession) -> tss_esapi::Result<()>,
    ) -> Result<[u8; 32], TpmError> {
        use tss_esapi::constants::SessionType;
        use tss_esapi::structures::SymmetricDefinition;
        let err = cmd_err("trial session", 0);
        let ctx = self.ctx()?;
        let session = ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Trial,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(&err)?
            .ok_or_else(|| err(tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::WrongValueFromTpm)))?;
        let policy = tss_esapi::interface_types::session_handles::PolicySession::try_from(session).map_err(&err)?;
        let r = f(ctx, policy).and_then(|_| ctx.policy_get_digest(policy));
        let _ =
            ctx.flush_context(tss_esapi::handles::ObjectHandle::from(tss_esapi::handles::SessionHandle::from(session)));
        let d = r.map_err(&err)?;
        d.value()
            .try_into()
            .map_err(|_| err(tss_esapi::Error::WrapperError(tss_esapi::WrapperErrorKind::WrongValueFromTpm)))
    }

    /// The current SHA-256 values of `pcrs`, ascending.
    pub fn pcr_read(&mut self, pcrs: &[u8]) -> Result<Vec<(u8, [u8; 32])>, TpmError> {
        use tss_esapi::structures::{PcrSelectionListBuilder, PcrSlot};
        let err = cmd_err("PCR_Read", 0);
        let mut wanted: Vec<u8> = pcrs.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut out = Vec::new();
        // PCR_Read returns at most 8 digests per call: ask in groups.
        for group in wanted.chunks(8) {
            let slots: Vec<PcrSlot> =
                group.iter().map(|i| PcrSlot::try_from(1u32 << i)).collect::<Result<_, _>>().map_err(&err)?;
            let sel = PcrSelectionListBuilder::new()
                .with_selection(HashingAlgorithm::Sha256, &slots)
                .build()
                .map_err(&err)?;
            let (_, got, digests) = self.protected(Protect::Audit, |c| c.pcr_read(sel))?.map_err(&err)?;
            let got_all = got.get_selections().iter().map(|s| s.selected().len()).sum::<usize>();
            if got_all != group.len() || digests.len() != group.len() {
                return Err(TpmError::Command {
                    op: "PCR_Read",
                    index: 0,
                    why: "the TPM has no SHA-256 bank for these PCRs".into(),
                    kind: None,
                });
            }
            for (i, d) in group.iter().zip(digests.value()) {
                let v: [u8; 32] = d.value().try_into().map_err(|_| TpmError::Command {
                    op: "PCR_Read",
                    index: 0,
                    why: "PCR value is not 32 bytes".into(),
                    kind: None,
                })?;
                out.push((*i, v));
            }
        }
        Ok(out)
    }

    /// Seal `data` under the owner hierarchy's storage primary, with `auth_policy` as
    /// the object's only authorization (no password). Returns the marshalled public part
    /// and the private part (encrypted by the primary; useless off this TPM).
    pub fn seal(&mut self, data: &[u8], auth_policy: [u8; 32]) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        use tss_esapi::attributes::ObjectAttributesBuilder;
        use tss_esapi::interface_types::algorithm::PublicAlgorithm;
        use tss_esapi::structures::{Digest as TpmDigest, KeyedHashScheme, PublicBuilder, SensitiveData};
        use tss_esapi::traits::Marshall;
        let err = cmd_err("seal", 0);
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .with_no_da(true)
            .build()
            .map_err(&err)?;
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(TpmDigest::try_from(auth_policy.to_vec()).map_err(&err)?)
            .with_keyed_hash_parameters(tss_esapi::structures::PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(TpmDigest::default())
            .build()
            .map_err(&err)?;
        let sensitive = SensitiveData::try_from(data.to_vec()).map_err(cmd_err("seal (at most 128 bytes)", 0))?;
        let template = storage_primary_template().map_err(&err)?;
        let primary = self
            .protected(Protect::Command, |c| c.create_primary(Hierarchy::Owner, template, None, None, None, None))?
            .map_err(cmd_err("CreatePrimary", 0))?;
        // The secret goes to the TPM as Create's encrypted first parameter.
        let r = self
            .protected(Protect::Command, |c| c.create(primary.key_handle, public, None, Some(sensitive), None, None));
        if let Ok(ctx) = self.ctx() {
            let _ = ctx.flush_context(primary.key_handle.into());
        }
        let created = r?.map_err(cmd_err("Create", 0))?;
        Ok((created.out_public.marshall().map_err(&err)?, created.out_private.value().to_vec()))
    }

    /// Unseal an object made by [`Tpm::seal`] whose policy is PolicyAuthorizeNV(`index`):
    /// for each `(pcrs, branches)` attempt, PolicyPCR over those PCRs' current values, then
    /// PolicyOR(branches), then PolicyAuthorizeNV. Fails unless the PCRs match a branch
    /// and the branches are what the index approves.
    pub fn unseal(
        &mut self,
        public: &[u8],
        private: &[u8],
        index: u32,
        attempts: &[(Vec<u8>, Vec<[u8; 32]>)],
    ) -> Result<Vec<u8>, TpmError> {
        use tss_esapi::structures::{
            Digest as TpmDigest, DigestList, PcrSelectionListBuilder, PcrSlot, Private, Public,
        };
        use tss_esapi::traits::UnMarshall;
        // Parsing the sealed file is not the TPM's answer: not "unseal" (a policy refusal).
        let err = cmd_err("unseal input", index);
        let public = Public::unmarshall(public).map_err(&err)?;
        let private = Private::try_from(private.to_vec()).map_err(&err)?;
        let mut raw_attempts = Vec::new();
        for (pcrs, branches) in attempts {
            let slots: Vec<PcrSlot> =
                pcrs.iter().map(|i| PcrSlot::try_from(1u32 << i)).collect::<Result<_, _>>().map_err(&err)?;
            let sel = PcrSelectionListBuilder::new()
                .with_selection(HashingAlgorithm::Sha256, &slots)
                .build()
                .map_err(&err)?;
            let mut list = DigestList::new();
            for b in branches {
                list.add(TpmDigest::try_from(b.to_vec()).map_err(&err)?).map_err(&err)?;
            }
            raw_attempts.push((sel.into(), list.try_into().map_err(&err)?));
        }
        let salt_key_name = self.pinned_name()?;
        let input = raw::UnsealInput {
            primary: storage_primary_template().and_then(|t| t.try_into()).map_err(&err)?,
            public: public.try_into().map_err(&err)?,
            private: private.into(),
            index,
            attempts: raw_attempts,
            salt_key_name,
        };
        self.disconnect(); // swtpm serves one client: the raw context needs the connection
        raw::unseal(&self.conf.tcti, &self.conf.owner_auth, &input).map_err(|e| match e {
            raw::Unsealing::Setup(e) => raw_err("unseal setup", index)(e),
            raw::Unsealing::Refused(e) => raw_err("unseal", index)(e),
        })
    }

    /// The digest of a trial session after TPM2_PolicyAuthorizeNV(`index`).
    pub fn trial_policy_authorize_nv(&mut self, index: u32) -> Result<[u8; 32], TpmError> {
        self.disconnect();
        raw::trial_policy_authorize_nv(&self.conf.tcti, index).map_err(raw_err("PolicyAuthorizeNV", index))
    }
}
