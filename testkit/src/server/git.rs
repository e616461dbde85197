//! Git smart HTTP through `git http-backend`.

use super::*;

// ---------------------------------------------------------------------------------------------
// Git smart HTTP
// ---------------------------------------------------------------------------------------------

pub(crate) struct GitPath {
    pub(crate) form: PathForm,
    pub(crate) ws: String,
    pub(crate) repo: String,
    /// After `<repo>.git/`, e.g. `info/refs` or `git-upload-pack`.
    pub(crate) rest: String,
}

pub(crate) fn parse_git_path(path: &str) -> Option<GitPath> {
    pub(crate) fn plain(s: &str, form: PathForm) -> Option<GitPath> {
        let (ws, after) = s.split_once('/')?;
        let (repo_git, rest) = after.split_once('/').unwrap_or((after, ""));
        let repo = repo_git.strip_suffix(".git")?;
        let rest_ok = rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
            && !rest.split('/').any(|seg| seg == "..");
        (valid_slug(ws) && valid_slug(repo) && rest_ok).then(|| GitPath {
            form,
            ws: ws.to_string(),
            repo: repo.to_string(),
            rest: rest.to_string(),
        })
    }
    let s = path.strip_prefix('/')?;
    s.strip_prefix("git/")
        .and_then(|r| plain(r, PathForm::GitPrefix))
        .or_else(|| plain(s, PathForm::Plain))
}

/// `git-upload-pack` / `git-receive-pack` from `info/refs?service=…` or the POST endpoint.
pub(crate) fn git_service(rest: &str, query: &str) -> Option<String> {
    if rest == "info/refs" {
        return query
            .split('&')
            .find_map(|kv| kv.strip_prefix("service="))
            .map(str::to_string);
    }
    ["git-upload-pack", "git-receive-pack"]
        .into_iter()
        .find(|s| rest == *s)
        .map(str::to_string)
}

pub(crate) fn plain_text(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{text}\n"),
    )
        .into_response()
}

pub(crate) fn unauthorized_git() -> Response {
    let mut resp = plain_text(StatusCode::UNAUTHORIZED, "authentication required");
    let h = resp.headers_mut();
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"githosted\""),
    );
    h.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"githosted\""),
    );
    resp
}

pub(crate) async fn git_handler(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    if path.starts_with("/githosted.") {
        return connect_error(StatusCode::NOT_FOUND, "unimplemented", "unknown procedure");
    }
    let Some(gp) = parse_git_path(&path) else {
        // A git request (for a repo path that cannot exist) without credentials:
        // ask for them first, saying nothing about what exists.
        let git_request = path.ends_with("/info/refs")
            || path.ends_with("/git-upload-pack")
            || path.ends_with("/git-receive-pack");
        if git_request && credentials(&parts.headers).1.is_none() {
            return unauthorized_git();
        }
        return plain_text(StatusCode::NOT_FOUND, "not found");
    };
    if is_lfs(&gp.rest) {
        return lfs_handler(shared, parts, body, gp).await;
    }
    let query = parts.uri.query().unwrap_or("").to_string();
    let service = git_service(&gp.rest, &query);
    let push = service.as_deref() == Some("git-receive-pack");
    let (scheme, raw) = credentials(&parts.headers);

    let mut seen = GitRequestSeen {
        method: parts.method.to_string(),
        path: path.clone(),
        query: query.clone(),
        form: gp.form,
        ws: gp.ws.clone(),
        repo: gp.repo.clone(),
        service,
        push,
        auth_scheme: scheme,
        content_encoding: parts
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        token: None,
        status: 0,
    };

    // Decide under the lock; run the backend without it.
    let decision: Result<String, Response> = {
        let mut st = shared.lock();
        let anonymous_refs = st.anonymous_info_refs
            && raw.is_none()
            && parts.method == axum::http::Method::GET
            && gp.rest == "info/refs";
        match raw.as_deref().and_then(|raw| st.authenticate(raw)) {
            None if anonymous_refs => Ok("anonymous".to_owned()),
            None => Err(unauthorized_git()),
            Some(i) => {
                seen.token = Some(st.view(i));
                let t = &st.tokens[i];
                let own_ws = &st.workspaces[t.workspace];
                let repo = st.repo_in(t.workspace, &gp.repo);
                let allowed = t.kind == Kind::Workspace
                    || t.allowlist
                        .iter()
                        .any(|entry| *entry == gp.repo || repo.is_some_and(|r| r.id == *entry));
                if own_ws.slug != gp.ws {
                    Err(plain_text(
                        StatusCode::FORBIDDEN,
                        "token is for another workspace",
                    ))
                } else if !allowed {
                    Err(plain_text(
                        StatusCode::FORBIDDEN,
                        "repo not allowed for this token",
                    ))
                } else if repo.is_none() {
                    Err(plain_text(StatusCode::NOT_FOUND, "repository not found"))
                } else if push && t.permission != Permission::Write {
                    Err(plain_text(StatusCode::FORBIDDEN, "token is read-only"))
                } else {
                    Ok(t.id.clone())
                }
            }
        }
    };
    let resp = match decision {
        Err(resp) => resp,
        Ok(remote_user) => match axum::body::to_bytes(body, GIT_BODY_LIMIT).await {
            Err(_) => plain_text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
            Ok(body) => {
                let cgi = Cgi {
                    method: parts.method.as_str(),
                    path_info: format!("/{}/{}.git/{}", gp.ws, gp.repo, gp.rest),
                    query: &query,
                    headers: &parts.headers,
                    remote_user: &remote_user,
                };
                match http_backend(&shared, cgi, body).await {
                    Ok(resp) => resp,
                    Err(err) => plain_text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("http-backend: {err}"),
                    ),
                }
            }
        },
    };
    seen.status = resp.status().as_u16();
    shared.lock().git_requests.push(seen);
    resp
}

pub(crate) struct Cgi<'a> {
    pub(crate) method: &'a str,
    pub(crate) path_info: String,
    pub(crate) query: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) remote_user: &'a str,
}

/// Runs `git http-backend` as a CGI script: request meta-variables in the environment, the
/// body on stdin; its stdout is CGI headers (with `Status:`), a blank line, then the body.
pub(crate) async fn http_backend(
    shared: &Shared,
    cgi: Cgi<'_>,
    body: Bytes,
) -> Result<Response, String> {
    let header = |name: &str| {
        cgi.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend");
    clean_git_env(cmd.as_std_mut(), &shared.home);
    cmd.env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", cgi.method)
        .env("PATH_INFO", &cgi.path_info)
        .env("QUERY_STRING", cgi.query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", cgi.remote_user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let writer = tokio::spawn(async move {
        // http-backend may stop reading early (e.g. on an error); that is not our failure.
        let _ = stdin.write_all(&body).await;
    });
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("wait: {e}"))?;
    let _ = writer.await;
    parse_cgi(&out.stdout).ok_or_else(|| {
        format!(
            "bad CGI output ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub(crate) fn parse_cgi(out: &[u8]) -> Option<Response> {
    let (head_len, sep_len) = [&b"\r\n\r\n"[..], &b"\n\n"[..]]
        .iter()
        .filter_map(|sep| {
            out.windows(sep.len())
                .position(|w| w == *sep)
                .map(|p| (p, sep.len()))
        })
        .min()?;
    let head = std::str::from_utf8(&out[..head_len]).ok()?;
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in head.lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse().ok()?;
            status = StatusCode::from_u16(code).ok()?;
        } else {
            headers.append(
                header::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            );
        }
    }
    let mut resp = Response::new(Body::from(out[head_len + sep_len..].to_vec()));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Some(resp)
}
