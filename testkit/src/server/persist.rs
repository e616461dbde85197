//! The server's lasting state in a directory (the local example's
//! `--state`): workspaces, repos (their git directories live there too) and
//! token records — HMAC digests and the key, never a raw token — written after
//! every change, read back at start, so a restart keeps every token working.

use super::*;

/// The state file in a state directory.
pub(crate) const STATE_FILE: &str = "state.json";

fn secs(t: OffsetDateTime) -> Value {
    json!(t.unix_timestamp())
}

fn time(v: &Value) -> Result<Option<OffsetDateTime>, String> {
    match v {
        Value::Null => Ok(None),
        v => v
            .as_i64()
            .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
            .map(Some)
            .ok_or_else(|| format!("not a time: {v}")),
    }
}

fn text(v: &Value, field: &str) -> Result<String, String> {
    v[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no {field}"))
}

/// The lasting part of `st`, as JSON.
pub(crate) fn snapshot(st: &Store) -> Value {
    json!({
        "hmac_key": hex::encode(st.hmac_key),
        "organization_id": st.organization_id,
        "workspaces": st.workspaces.iter().map(|w| json!({"id": w.id, "slug": w.slug})).collect::<Vec<_>>(),
        "repos": st.repos.iter().map(|r| json!({"id": r.id, "slug": r.slug, "workspace_id": r.workspace_id})).collect::<Vec<_>>(),
        "tokens": st.tokens.iter().map(|t| json!({
            "id": t.id,
            "digest": hex::encode(t.digest),
            "kind": match t.kind { Kind::Workspace => "workspace", Kind::Repo => "repo" },
            "permission": match t.permission { Permission::Read => "read", Permission::Write => "write" },
            "name": t.name,
            "workspace": t.workspace,
            "allowlist": t.allowlist,
            "created_at": secs(t.created_at),
            "expires_at": t.expires_at.map(secs),
            "revoked_at": t.revoked_at.map(secs),
            "last_used_at": t.last_used_at.map(secs),
            "created_by_name": t.created_by_name,
            "created_by_token_prefix": t.created_by_token_prefix,
            "parent_id": t.parent_id,
            "subject": t.subject,
        })).collect::<Vec<_>>(),
    })
}

/// A store with the lasting state `v` (as [`snapshot`] wrote it).
pub(crate) fn restore(v: &Value) -> Result<Store, String> {
    let mut st = Store::new();
    st.hmac_key = hex::decode(text(v, "hmac_key")?)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or("a bad hmac_key")?;
    st.organization_id = text(v, "organization_id")?;
    let list = |field: &str| v[field].as_array().cloned().unwrap_or_default();
    for w in list("workspaces") {
        st.workspaces.push(Workspace {
            id: text(&w, "id")?,
            slug: text(&w, "slug")?,
        });
    }
    for r in list("repos") {
        st.repos.push(Repo {
            id: text(&r, "id")?,
            slug: text(&r, "slug")?,
            workspace_id: text(&r, "workspace_id")?,
        });
    }
    for t in list("tokens") {
        let workspace = t["workspace"]
            .as_u64()
            .and_then(|w| usize::try_from(w).ok())
            .filter(|w| *w < st.workspaces.len())
            .ok_or("a token of no workspace")?;
        st.tokens.push(Token {
            id: text(&t, "id")?,
            digest: hex::decode(text(&t, "digest")?)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or("a bad digest")?,
            kind: match t["kind"].as_str() {
                Some("workspace") => Kind::Workspace,
                Some("repo") => Kind::Repo,
                _ => return Err("a bad token kind".into()),
            },
            permission: match t["permission"].as_str() {
                Some("read") => Permission::Read,
                Some("write") => Permission::Write,
                _ => return Err("a bad permission".into()),
            },
            name: text(&t, "name")?,
            workspace,
            allowlist: t["allowlist"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            created_at: time(&t["created_at"])?.ok_or("no created_at")?,
            expires_at: time(&t["expires_at"])?,
            revoked_at: time(&t["revoked_at"])?,
            last_used_at: time(&t["last_used_at"])?,
            created_by_name: text(&t, "created_by_name")?,
            created_by_token_prefix: text(&t, "created_by_token_prefix")?,
            parent_id: t["parent_id"].as_str().map(str::to_owned),
            subject: text(&t, "subject")?,
        });
    }
    Ok(st)
}

/// Reads the store kept in `dir`, or a new one when there is none yet.
pub(crate) fn load(dir: &FsPath) -> Result<Store, String> {
    let file = dir.join(STATE_FILE);
    match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|v| restore(&v))
            .map_err(|e| format!("{}: {e} (delete it to start afresh)", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Store::new()),
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

impl Shared {
    /// Writes the lasting state to the state directory, if the server has one
    /// (whole, then renamed into place: a crash leaves the old or the new).
    pub(crate) fn persist(&self) {
        let Some(dir) = &self.state_dir else {
            return;
        };
        // Held while writing: one writer at a time, the latest state last.
        let st = self.lock();
        let file = dir.join(STATE_FILE);
        let partial = dir.join(format!("{STATE_FILE}.partial"));
        let written = std::fs::write(&partial, snapshot(&st).to_string())
            .and_then(|()| std::fs::rename(&partial, &file));
        drop(st);
        if let Err(e) = written {
            eprintln!(
                "server: could not keep the state in {}: {e}",
                file.display()
            );
        }
    }
}
