#!/usr/bin/env python3
"""Cross-check the test server against the official githosted Python SDK (0.1.1).

Run by the ignored test `python_sdk_speaks_the_same_wire_format` in tests/server.rs:

    python3 tests/sdk_check.py BASE_URL WORKSPACE_ID FOREIGN_REPO_ID   < token

The workspace token (gw_, write) of workspace WORKSPACE_ID comes on stdin, never argv/env.
The workspace has a repo "app"; FOREIGN_REPO_ID is an rp_ id in another workspace.
Prints "sdk_check: OK" on success; any failed check raises.
"""

import sys
from datetime import timezone

import githosted
from githosted import Client, ConnectError, NotFoundError


def expect_error(fn, code):
    try:
        fn()
    except ConnectError as e:
        assert e.code == code, f"want {code}, got {e.code}: {e}"
        return
    except NotFoundError:
        assert code == "not_found", f"want {code}, got not_found"
        return
    raise AssertionError(f"want error {code}, got success")


def main():
    base_url, workspace_id, foreign_repo_id = sys.argv[1:4]
    token = sys.stdin.readline().strip()
    assert token.startswith("gw_"), "expected a workspace token on stdin"
    client = Client(token=token, base_url=base_url)

    # ExchangeToken
    ex = client.exchange_token(
        repo_allowlist=["app"], permission="write", ttl_seconds=120, subject="sdk-check"
    )
    rec = ex.record
    assert ex.token.startswith("gr_"), ex.token
    assert rec.id.startswith("tk_"), rec
    assert rec.prefix == "gr", rec
    assert rec.kind == "repo", rec
    assert rec.permission == "write", rec
    assert rec.repo_allowlist == ["app"], rec
    assert rec.workspace_id == workspace_id, rec
    assert rec.organization_id.startswith("org_"), rec
    assert rec.created_at.tzinfo is not None and rec.created_at.year >= 2025, rec
    assert rec.created_at.utcoffset() == timezone.utc.utcoffset(None)
    assert rec.expires_at is not None
    assert (rec.expires_at - rec.created_at).total_seconds() == 120, rec
    assert rec.revoked_at is None, rec

    # CreateToken
    ci = client.create_token(
        "ci", kind="repo", permission="read", repo_allowlist=["app"], ttl_hours=1
    )
    assert ci.token.startswith("gr_"), ci.token
    assert ci.record.name == "ci" and ci.record.kind == "repo", ci.record
    assert ci.record.permission == "read", ci.record
    assert (ci.record.expires_at - ci.record.created_at).total_seconds() == 3600
    forever = client.create_token("forever", kind="workspace", permission="read")
    assert forever.token.startswith("gw_"), forever.token
    assert forever.record.kind == "workspace" and forever.record.permission == "read"
    assert forever.record.expires_at is None, forever.record
    assert forever.record.repo_allowlist == [], forever.record

    # ListTokens, paged
    seen, page_token, pages = [], "", 0
    while True:
        page = client.list_tokens(page_size=2, page_token=page_token)
        pages += 1
        assert 1 <= len(page.tokens) <= 2, page
        seen.extend(page.tokens)
        if page.next_page_token is None:
            break
        page_token = page.next_page_token
    ids = [t.id for t in seen]
    assert len(ids) == len(set(ids)) == 4 and pages == 2, ids
    assert {rec.id, ci.record.id, forever.record.id} <= set(ids), ids
    assert all(t.workspace_id == workspace_id for t in seen)
    listed = next(t for t in seen if t.id == rec.id)
    assert listed.kind == "repo" and listed.permission == "write"
    assert listed.last_used_at is None
    parent = next(t for t in seen if t.kind == "workspace" and t.id != forever.record.id)
    assert parent.last_used_at is not None, "the caller's token was just used"

    # Errors the SDK maps
    expect_error(lambda: client.exchange_token(repo_allowlist=["nope"]), "not_found")
    expect_error(
        lambda: client.exchange_token(repo_allowlist=[foreign_repo_id]), "permission_denied"
    )
    repo_client = Client(token=ex.token, base_url=base_url)
    expect_error(lambda: repo_client.list_tokens(), "permission_denied")
    expect_error(
        lambda: repo_client.exchange_token(repo_allowlist=["app"]), "permission_denied"
    )
    read_client = Client(token=forever.token, base_url=base_url)
    expect_error(
        lambda: read_client.exchange_token(repo_allowlist=["app"], permission="write"),
        "permission_denied",
    )
    expect_error(lambda: read_client.create_token("x"), "permission_denied")
    bogus = Client(token="gw_" + "0" * 40, base_url=base_url)
    expect_error(lambda: bogus.list_tokens(), "unauthenticated")

    for c in (client, repo_client, read_client, bogus):
        c.close()
    print(f"sdk_check: OK (githosted {getattr(githosted, '__version__', '0.1.1')})")


if __name__ == "__main__":
    main()
