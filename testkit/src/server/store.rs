//! The server's state: workspaces, repos, tokens (as HMAC digests), faults, logs.

use super::*;

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

pub(crate) struct Shared {
    pub(crate) root: PathBuf,
    pub(crate) home: PathBuf,
    pub(crate) state: Mutex<Store>,
    /// Where the lasting state is kept (see `persist.rs`); `None`: in memory only.
    pub(crate) state_dir: Option<PathBuf>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Store> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) struct Workspace {
    pub(crate) id: String,
    pub(crate) slug: String,
}

pub(crate) struct Repo {
    pub(crate) id: String,
    pub(crate) slug: String,
    pub(crate) workspace_id: String,
}

pub(crate) type Digest = [u8; 32];

pub(crate) struct Token {
    pub(crate) id: String,
    /// HMAC-SHA256(server key, raw token). The raw value is never stored.
    pub(crate) digest: Digest,
    pub(crate) kind: Kind,
    pub(crate) permission: Permission,
    pub(crate) name: String,
    pub(crate) workspace: usize,
    pub(crate) allowlist: Vec<String>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) expires_at: Option<OffsetDateTime>,
    pub(crate) revoked_at: Option<OffsetDateTime>,
    pub(crate) last_used_at: Option<OffsetDateTime>,
    pub(crate) created_by_name: String,
    pub(crate) created_by_token_prefix: String,
    pub(crate) parent_id: Option<String>,
    pub(crate) subject: String,
}

impl Token {
    pub(crate) fn live(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

pub(crate) struct NewToken {
    pub(crate) kind: Kind,
    pub(crate) permission: Permission,
    pub(crate) name: String,
    pub(crate) workspace: usize,
    pub(crate) allowlist: Vec<String>,
    pub(crate) created_at: OffsetDateTime,
    pub(crate) expires_at: Option<OffsetDateTime>,
    pub(crate) created_by_token_prefix: String,
    pub(crate) created_by_name: String,
    pub(crate) parent_id: Option<String>,
    pub(crate) subject: String,
}

pub(crate) struct Store {
    pub(crate) hmac_key: [u8; 32],
    pub(crate) organization_id: String,
    pub(crate) workspaces: Vec<Workspace>,
    pub(crate) repos: Vec<Repo>,
    pub(crate) tokens: Vec<Token>,
    pub(crate) faults: VecDeque<Fault>,
    pub(crate) api_calls: Vec<ApiCallSeen>,
    pub(crate) exchanges: Vec<ExchangeSeen>,
    pub(crate) git_requests: Vec<GitRequestSeen>,
    /// Record ids revoked through `RevokeToken`, in order.
    pub(crate) revoked_via_api: Vec<String>,
    /// Test knob: answer `GET …/info/refs` without credentials, so a push's
    /// first 401 comes on its POST.
    pub(crate) anonymous_info_refs: bool,
    /// TEST-ONLY, see [`Server::issued_tokens`]. Never read by the server.
    pub(crate) issued_for_leak_checks: Vec<String>,
    /// Test knob: exchanged tokens live at most this many seconds (a server
    /// clamps `ttlSeconds` as it likes), so renewals happen within a test.
    pub(crate) exchange_ttl_cap: Option<i64>,
}

impl Store {
    pub(crate) fn new() -> Self {
        Store {
            hmac_key: rand::random(),
            organization_id: new_id("org_"),
            workspaces: Vec::new(),
            repos: Vec::new(),
            tokens: Vec::new(),
            faults: VecDeque::new(),
            api_calls: Vec::new(),
            exchanges: Vec::new(),
            git_requests: Vec::new(),
            revoked_via_api: Vec::new(),
            anonymous_info_refs: false,
            issued_for_leak_checks: Vec::new(),
            exchange_ttl_cap: None,
        }
    }

    pub(crate) fn digest(&self, raw: &str) -> Digest {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.hmac_key).expect("any key length");
        mac.update(raw.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub(crate) fn find(&self, raw: &str) -> Option<usize> {
        let d = self.digest(raw);
        self.tokens.iter().position(|t| t.digest == d)
    }

    /// The live token for `raw`, marking it used; `None` for unknown, expired or revoked.
    pub(crate) fn authenticate(&mut self, raw: &str) -> Option<usize> {
        let now = now();
        let i = self.find(raw)?;
        if !self.tokens[i].live(now) {
            return None;
        }
        self.tokens[i].last_used_at = Some(now);
        Some(i)
    }

    pub(crate) fn issue(&mut self, t: NewToken) -> (String, usize) {
        let raw = format!("{}_{}", t.kind.prefix(), random_alnum(40));
        let token = Token {
            id: new_id("tk_"),
            digest: self.digest(&raw),
            kind: t.kind,
            permission: t.permission,
            name: t.name,
            workspace: t.workspace,
            allowlist: t.allowlist,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: None,
            last_used_at: None,
            created_by_name: t.created_by_name,
            created_by_token_prefix: t.created_by_token_prefix,
            parent_id: t.parent_id,
            subject: t.subject,
        };
        self.tokens.push(token);
        self.issued_for_leak_checks.push(raw.clone());
        (raw, self.tokens.len() - 1)
    }

    pub(crate) fn workspace_by_slug(&self, slug: &str) -> Option<usize> {
        self.workspaces.iter().position(|w| w.slug == slug)
    }

    pub(crate) fn repo_in(&self, workspace: usize, slug: &str) -> Option<&Repo> {
        let ws_id = &self.workspaces[workspace].id;
        self.repos
            .iter()
            .find(|r| &r.workspace_id == ws_id && r.slug == slug)
    }

    pub(crate) fn view(&self, i: usize) -> TokenRecordView {
        let t = &self.tokens[i];
        let ws = &self.workspaces[t.workspace];
        TokenRecordView {
            id: t.id.clone(),
            prefix: t.kind.prefix().to_string(),
            name: t.name.clone(),
            kind: t.kind,
            organization_id: self.organization_id.clone(),
            workspace_id: ws.id.clone(),
            workspace_slug: ws.slug.clone(),
            permission: t.permission,
            repo_allowlist: t.allowlist.clone(),
            created_at: t.created_at.unix_timestamp(),
            expires_at: t.expires_at.map(OffsetDateTime::unix_timestamp),
            revoked_at: t.revoked_at.map(OffsetDateTime::unix_timestamp),
            last_used_at: t.last_used_at.map(OffsetDateTime::unix_timestamp),
            created_by_token_prefix: t.created_by_token_prefix.clone(),
            parent_id: t.parent_id.clone(),
            subject: t.subject.clone(),
        }
    }

    /// The token record in proto3 canonical JSON: default values (empty strings and lists,
    /// unset timestamps) are left out.
    pub(crate) fn record_json(&self, i: usize) -> Value {
        let t = &self.tokens[i];
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            let empty = match &v {
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Null => true,
                _ => false,
            };
            if !empty {
                m.insert(k.to_string(), v);
            }
        };
        put("id", json!(t.id));
        put("prefix", json!(t.kind.prefix()));
        put("name", json!(t.name));
        put("kind", json!(t.kind.wire()));
        put("organizationId", json!(self.organization_id));
        put("workspaceId", json!(self.workspaces[t.workspace].id));
        put("permission", json!(t.permission.wire()));
        put("repoAllowlist", json!(t.allowlist));
        put("createdAt", json!(rfc3339(t.created_at)));
        put("expiresAt", json!(t.expires_at.map(rfc3339)));
        put("revokedAt", json!(t.revoked_at.map(rfc3339)));
        put("lastUsedAt", json!(t.last_used_at.map(rfc3339)));
        put("createdByName", json!(t.created_by_name));
        put("createdByTokenPrefix", json!(t.created_by_token_prefix));
        Value::Object(m)
    }

    /// Resolves one `repoAllowlist` entry (a slug in the caller's workspace or an `rp_…` id).
    pub(crate) fn check_allowlist_entry(
        &self,
        workspace: usize,
        entry: &str,
    ) -> Result<(), ApiError> {
        if entry.is_empty() {
            return Err(ApiError::invalid_argument(
                "repoAllowlist entries must not be empty",
            ));
        }
        if entry.starts_with("rp_") {
            let repo = self
                .repos
                .iter()
                .find(|r| r.id == entry)
                .ok_or_else(|| ApiError::not_found(format!("repo {entry} not found")))?;
            if repo.workspace_id != self.workspaces[workspace].id {
                return Err(ApiError::permission_denied(format!(
                    "repo {entry} is not in this workspace"
                )));
            }
            return Ok(());
        }
        if self.repo_in(workspace, entry).is_none() {
            return Err(ApiError::not_found(format!(
                "repo {entry:?} not found in this workspace"
            )));
        }
        Ok(())
    }

    /// `organizationRef` / `workspaceRef`: empty means "the caller's"; otherwise an id or
    /// slug that must name the caller's own organization / workspace.
    pub(crate) fn check_refs(&self, caller: usize, req: &Req) -> Result<(), ApiError> {
        let org = req.string("organizationRef", "organization_ref")?;
        if !org.is_empty() && org != self.organization_id {
            return Err(ApiError::permission_denied(
                "organizationRef is not the caller's",
            ));
        }
        let ws = req.string("workspaceRef", "workspace_ref")?;
        let own = &self.workspaces[self.tokens[caller].workspace];
        if !ws.is_empty() && ws != own.id && ws != own.slug {
            return Err(ApiError::permission_denied(
                "workspaceRef is not the caller's",
            ));
        }
        Ok(())
    }

    pub(crate) fn require_workspace_token(&self, caller: usize) -> Result<(), ApiError> {
        if self.tokens[caller].kind != Kind::Workspace {
            return Err(ApiError::permission_denied(
                "this method needs a workspace (gw_) token",
            ));
        }
        Ok(())
    }

    // ----- API methods -------------------------------------------------------------------------

    pub(crate) fn exchange_token(
        &mut self,
        caller: usize,
        req: &Req,
        meta: &CallMeta,
    ) -> Result<Value, ApiError> {
        self.require_workspace_token(caller)?;
        self.check_refs(caller, req)?;
        let allowlist = req.strings("repoAllowlist", "repo_allowlist")?;
        let requested_permission = req.permission()?;
        let ttl_seconds = req.int("ttlSeconds", "ttl_seconds")?;
        let subject = req.string("subject", "subject")?;

        if allowlist.is_empty() {
            return Err(ApiError::invalid_argument(
                "repoAllowlist must not be empty",
            ));
        }
        if ttl_seconds < 0 {
            return Err(ApiError::invalid_argument(
                "ttlSeconds must not be negative",
            ));
        }
        let workspace = self.tokens[caller].workspace;
        for entry in &allowlist {
            self.check_allowlist_entry(workspace, entry)?;
        }
        let permission = requested_permission.unwrap_or(Permission::Read);
        if permission > self.tokens[caller].permission {
            return Err(ApiError::permission_denied(
                "permission exceeds the parent token's permission",
            ));
        }
        let ttl = match ttl_seconds {
            0 => DEFAULT_EXCHANGE_TTL_SECS,
            n => n.min(MAX_EXCHANGE_TTL_SECS),
        };
        let ttl = self.exchange_ttl_cap.map_or(ttl, |cap| ttl.min(cap));
        let now = now();
        let name = if subject.is_empty() {
            "exchange".to_string()
        } else {
            format!("exchange: {subject}")
        };
        let (raw, i) = self.issue(NewToken {
            kind: Kind::Repo,
            permission,
            name,
            workspace,
            allowlist: allowlist.clone(),
            created_at: now,
            expires_at: Some(now + Duration::from_secs(ttl as u64)),
            created_by_token_prefix: self.tokens[caller].kind.prefix().to_string(),
            created_by_name: String::new(),
            parent_id: Some(self.tokens[caller].id.clone()),
            subject: subject.clone(),
        });
        self.exchanges.push(ExchangeSeen {
            parent_id: self.tokens[caller].id.clone(),
            allowlist,
            requested_permission,
            ttl_seconds,
            subject,
            minted: self.view(i),
            auth_scheme: AuthScheme::Bearer,
            request_id: meta.request_id.clone(),
            client: meta.client.clone(),
        });
        Ok(json!({"token": raw, "record": self.record_json(i)}))
    }

    pub(crate) fn revoke_token(&mut self, caller: usize, req: &Req) -> Result<Value, ApiError> {
        self.require_workspace_token(caller)?;
        self.check_refs(caller, req)?;
        let id = req.string("tokenId", "token_id")?;
        if id.is_empty() {
            return Err(ApiError::invalid_argument("tokenId is required"));
        }
        let workspace = self.tokens[caller].workspace;
        let target = self
            .tokens
            .iter_mut()
            .find(|t| t.id == id && t.workspace == workspace)
            .ok_or_else(|| ApiError::not_found(format!("token {id} not found")))?;
        target.revoked_at.get_or_insert(now());
        self.revoked_via_api.push(id);
        Ok(json!({}))
    }

    /// `ListWorkspaces` (not in githosted's published reference, which the
    /// helper treats as optional): the workspaces the caller can use, with its
    /// permission in each. A workspace token sees its own workspace.
    pub(crate) fn list_workspaces(&mut self, caller: usize) -> Result<Value, ApiError> {
        self.require_workspace_token(caller)?;
        let token = &self.tokens[caller];
        let ws = &self.workspaces[token.workspace];
        Ok(json!({"workspaces": [{
            "id": ws.id,
            "slug": ws.slug,
            "name": ws.slug,
            "permission": token.permission.wire(),
        }]}))
    }

    pub(crate) fn list_tokens(&mut self, caller: usize, req: &Req) -> Result<Value, ApiError> {
        self.require_workspace_token(caller)?;
        self.check_refs(caller, req)?;
        let page_size = req.int("pageSize", "page_size")?;
        let page_token = req.string("pageToken", "page_token")?;
        if page_size < 0 {
            return Err(ApiError::invalid_argument("pageSize must not be negative"));
        }
        let size = match page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let start: usize = if page_token.is_empty() {
            0
        } else {
            page_token
                .parse()
                .map_err(|_| ApiError::invalid_argument("invalid pageToken"))?
        };
        let workspace = self.tokens[caller].workspace;
        let mine: Vec<usize> = (0..self.tokens.len())
            .filter(|&i| self.tokens[i].workspace == workspace)
            .collect();
        let page: Vec<Value> = mine
            .iter()
            .skip(start)
            .take(size)
            .map(|&i| self.record_json(i))
            .collect();
        let mut out = Map::new();
        if !page.is_empty() {
            out.insert("tokens".into(), Value::Array(page));
        }
        let next = start.saturating_add(size);
        if next < mine.len() {
            out.insert("nextPageToken".into(), json!(next.to_string()));
        }
        Ok(Value::Object(out))
    }

    pub(crate) fn create_token(&mut self, caller: usize, req: &Req) -> Result<Value, ApiError> {
        self.require_workspace_token(caller)?;
        self.check_refs(caller, req)?;
        if self.tokens[caller].permission != Permission::Write {
            return Err(ApiError::permission_denied(
                "CreateToken needs a write workspace token",
            ));
        }
        let name = req.string("name", "name")?;
        let kind = req.kind()?;
        let permission = req.permission()?;
        let allowlist = req.strings("repoAllowlist", "repo_allowlist")?;
        let ttl_hours = req.int("ttlHours", "ttl_hours")?;
        if name.is_empty() {
            return Err(ApiError::invalid_argument("name is required"));
        }
        let kind = kind.ok_or_else(|| ApiError::invalid_argument("kind is required"))?;
        let permission =
            permission.ok_or_else(|| ApiError::invalid_argument("permission is required"))?;
        if !(0..=MAX_CREATE_TTL_HOURS).contains(&ttl_hours) {
            return Err(ApiError::invalid_argument(format!(
                "ttlHours must be between 0 and {MAX_CREATE_TTL_HOURS}"
            )));
        }
        let workspace = self.tokens[caller].workspace;
        match kind {
            Kind::Workspace if !allowlist.is_empty() => {
                return Err(ApiError::invalid_argument(
                    "a workspace token takes no repoAllowlist",
                ));
            }
            Kind::Repo if allowlist.is_empty() => {
                return Err(ApiError::invalid_argument(
                    "a repo token needs a non-empty repoAllowlist",
                ));
            }
            _ => {}
        }
        for entry in &allowlist {
            self.check_allowlist_entry(workspace, entry)?;
        }
        let now = now();
        let (raw, i) = self.issue(NewToken {
            kind,
            permission,
            name,
            workspace,
            allowlist,
            created_at: now,
            expires_at: (ttl_hours > 0).then(|| now + Duration::from_secs(ttl_hours as u64 * 3600)),
            created_by_token_prefix: self.tokens[caller].kind.prefix().to_string(),
            created_by_name: String::new(),
            parent_id: Some(self.tokens[caller].id.clone()),
            subject: String::new(),
        });
        Ok(json!({"token": raw, "record": self.record_json(i)}))
    }

    /// Takes one use of the first queued fault that applies to `method`.
    pub(crate) fn take_fault(&mut self, method: &str) -> Option<FaultKind> {
        let pos = self
            .faults
            .iter()
            .position(|f| f.method.as_deref().is_none_or(|m| m == method))?;
        let fault = &mut self.faults[pos];
        fault.times -= 1;
        let kind = fault.kind.clone();
        if fault.times == 0 {
            self.faults.remove(pos);
        }
        Some(kind)
    }
}
