//! A minimal Git LFS server: the batch API with the `basic` transfer adapter.
//!
//! - `POST <repo>.git/info/lfs/objects/batch` (`application/vnd.git-lfs+json`) answers each
//!   object with an `upload` or `download` action whose `href` is on this server;
//! - `PUT <repo>.git/info/lfs/objects/<oid>` stores an object (its SHA-256 and size checked);
//! - `GET <repo>.git/info/lfs/objects/<oid>` returns it.
//!
//! Every request is authenticated exactly as git's smart HTTP is (HTTP Basic with the token as
//! password, or Bearer): the token's workspace, allowlist and, for uploads, write permission.
//! The actions carry no credentials of their own (no `header`, no `authenticated`), so git-lfs
//! asks the credential helper for the transfer URLs too. Objects live in the bare repository's
//! `lfs/objects/<o>/<i>/<oid>`, as git-lfs lays them out. Each request is recorded in
//! [`Server::git_requests`] with `service` `lfs-batch`, `lfs-upload` or `lfs-download`.

use super::*;

const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// Whether a path after `<repo>.git/` is the LFS API's.
pub(crate) fn is_lfs(rest: &str) -> bool {
    rest == "info/lfs" || rest.starts_with("info/lfs/")
}

fn lfs_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, LFS_JSON)],
        json!({ "message": message }).to_string(),
    )
        .into_response()
}

fn unauthorized_lfs() -> Response {
    let mut resp = lfs_error(StatusCode::UNAUTHORIZED, "authentication required");
    let h = resp.headers_mut();
    for value in ["Basic realm=\"githosted\"", "Bearer realm=\"githosted\""] {
        h.append(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        h.append("LFS-Authenticate", HeaderValue::from_static(value));
    }
    resp
}

fn valid_oid(oid: &str) -> bool {
    oid.len() == 64
        && oid
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn object_path(shared: &Shared, gp: &GitPath, oid: &str) -> PathBuf {
    shared
        .root
        .join(&gp.ws)
        .join(format!("{}.git", gp.repo))
        .join("lfs/objects")
        .join(&oid[0..2])
        .join(&oid[2..4])
        .join(oid)
}

/// The LFS request `gp` (its `rest` starts with `info/lfs`), authenticated like git's.
pub(crate) async fn lfs_handler(
    shared: Arc<Shared>,
    parts: axum::http::request::Parts,
    body: Body,
    gp: GitPath,
) -> Response {
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let sub = gp.rest.strip_prefix("info/lfs").unwrap_or("");
    let object = |s: &str| {
        s.strip_prefix("/objects/")
            .filter(|o| valid_oid(o))
            .map(str::to_owned)
    };
    // (what, the object's oid)
    let op: Option<(&'static str, Option<String>)> = match (parts.method.as_str(), sub) {
        ("POST", "/objects/batch") => Some(("batch", None)),
        ("PUT", s) => object(s).map(|oid| ("upload", Some(oid))),
        ("GET", s) => object(s).map(|oid| ("download", Some(oid))),
        _ => None,
    };
    let (scheme, raw) = credentials(&parts.headers);
    let mut seen = GitRequestSeen {
        method: parts.method.to_string(),
        path,
        query,
        form: gp.form,
        ws: gp.ws.clone(),
        repo: gp.repo.clone(),
        service: Some(format!(
            "lfs-{}",
            op.as_ref().map_or("other", |(what, _)| what)
        )),
        push: op.as_ref().is_some_and(|(what, _)| *what == "upload"),
        auth_scheme: scheme,
        content_encoding: None,
        token: None,
        status: 0,
    };
    let op = op.as_ref().map(|(what, oid)| (*what, oid.as_deref()));
    let resp = lfs_answer(&shared, &parts, body, &gp, op, raw, &mut seen).await;
    seen.status = resp.status().as_u16();
    shared.lock().git_requests.push(seen);
    resp
}

/// The answer to one LFS request: `op` is (`batch`|`upload`|`download`, oid).
async fn lfs_answer(
    shared: &Shared,
    parts: &axum::http::request::Parts,
    body: Body,
    gp: &GitPath,
    op: Option<(&'static str, Option<&str>)>,
    raw: Option<String>,
    seen: &mut GitRequestSeen,
) -> Response {
    // Authenticate first, saying nothing about what exists.
    let (can_write, token_ok) = {
        let mut st = shared.lock();
        match raw.as_deref().and_then(|raw| st.authenticate(raw)) {
            None => return unauthorized_lfs(),
            Some(i) => {
                seen.token = Some(st.view(i));
                let t = &st.tokens[i];
                let repo = st.repo_in(t.workspace, &gp.repo);
                let allowed = t.kind == Kind::Workspace
                    || t.allowlist
                        .iter()
                        .any(|entry| *entry == gp.repo || repo.is_some_and(|r| r.id == *entry));
                let verdict = if st.workspaces[t.workspace].slug != gp.ws {
                    Err(lfs_error(
                        StatusCode::FORBIDDEN,
                        "token is for another workspace",
                    ))
                } else if !allowed {
                    Err(lfs_error(
                        StatusCode::FORBIDDEN,
                        "repo not allowed for this token",
                    ))
                } else if repo.is_none() {
                    Err(lfs_error(StatusCode::NOT_FOUND, "repository not found"))
                } else {
                    Ok(())
                };
                (t.permission == Permission::Write, verdict)
            }
        }
    };
    if let Err(resp) = token_ok {
        return resp;
    }
    let Some((op, oid)) = op else {
        return lfs_error(StatusCode::NOT_FOUND, "not found");
    };
    let Ok(body) = axum::body::to_bytes(body, GIT_BODY_LIMIT).await else {
        return lfs_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    };
    match (op, oid) {
        ("batch", _) => batch(shared, parts, gp, &body, can_write),
        ("upload", Some(oid)) => {
            if !can_write {
                return lfs_error(StatusCode::FORBIDDEN, "token is read-only");
            }
            let digest = hex::encode(<Sha256 as sha2::Digest>::digest(&body));
            if digest != oid {
                return lfs_error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "content does not match oid",
                );
            }
            let path = object_path(shared, gp, oid);
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, &body));
            match written {
                Ok(()) => StatusCode::OK.into_response(),
                Err(e) => lfs_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("store: {e}")),
            }
        }
        ("download", Some(oid)) => match std::fs::read(object_path(shared, gp, oid)) {
            Ok(bytes) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                bytes,
            )
                .into_response(),
            Err(_) => lfs_error(StatusCode::NOT_FOUND, "object not found"),
        },
        _ => lfs_error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn batch(
    shared: &Shared,
    parts: &axum::http::request::Parts,
    gp: &GitPath,
    body: &[u8],
    can_write: bool,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return lfs_error(StatusCode::UNPROCESSABLE_ENTITY, "batch: not JSON");
    };
    let operation = request["operation"].as_str().unwrap_or_default();
    if !matches!(operation, "upload" | "download") {
        return lfs_error(StatusCode::UNPROCESSABLE_ENTITY, "batch: unknown operation");
    }
    if operation == "upload" && !can_write {
        return lfs_error(StatusCode::FORBIDDEN, "token is read-only");
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let prefix = match gp.form {
        PathForm::Plain => "",
        PathForm::GitPrefix => "/git",
    };
    let base = format!("http://{host}{prefix}/{}/{}.git/info/lfs", gp.ws, gp.repo);
    let objects: Vec<Value> = request["objects"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|object| {
            let oid = object["oid"].as_str().unwrap_or_default();
            let size = object["size"].as_u64().unwrap_or(0);
            if !valid_oid(oid) {
                return json!({ "oid": oid, "size": size,
                    "error": { "code": 422, "message": "invalid oid" } });
            }
            let present = std::fs::metadata(object_path(shared, gp, oid)).is_ok();
            let href = format!("{base}/objects/{oid}");
            match (operation, present) {
                ("upload", true) => json!({ "oid": oid, "size": size }),
                ("upload", false) => json!({ "oid": oid, "size": size,
                    "actions": { "upload": { "href": href, "expires_in": 3600 } } }),
                (_, true) => json!({ "oid": oid, "size": size,
                    "actions": { "download": { "href": href, "expires_in": 3600 } } }),
                (_, false) => json!({ "oid": oid, "size": size,
                    "error": { "code": 404, "message": "object does not exist" } }),
            }
        })
        .collect();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, LFS_JSON)],
        json!({ "transfer": "basic", "objects": objects, "hash_algo": "sha256" }).to_string(),
    )
        .into_response()
}
