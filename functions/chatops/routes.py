"""Starlette routes for the chat platforms: POST /chatops/{platform} (GET too for WeCom URL verification).

Each delivery is authenticated over its raw bytes (401/403), read (400/422 naming the field), parsed as
a command (usage help on a mistake) and run through `Approvals`; the answer is in the platform's format.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from functions.approvals import Approvals, CommandRequest, Result
from functions.chatops.base import Inbound, Platform, Reply
from functions.chatops.dingtalk import DingTalk
from functions.chatops.feishu import Feishu
from functions.chatops.parse import UsageError, parse
from functions.chatops.slack import Slack
from functions.chatops.teams import Teams, keys
from functions.chatops.wecom import WeCom
from functions.core.values import value
from functions.errors import ConfigError, brief
from functions.providers.sources.base import Forbidden, Malformed, Unauthenticated

log = logging.getLogger("graylane.chatops")


@value
class ChatOpsSettings:
    slack_signing_secret: str = ""
    dingtalk_app_secret: str = ""
    feishu_verification_token: str = ""
    feishu_encrypt_key: str = ""
    wecom_token: str = ""
    wecom_aes_key: str = ""
    wecom_receive_id: str = ""
    teams_security_token: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ChatOpsSettings:
        """GRAYLANE_SLACK_SIGNING_SECRET, GRAYLANE_DINGTALK_APP_SECRET, GRAYLANE_FEISHU_{VERIFICATION_TOKEN,
        ENCRYPT_KEY}, GRAYLANE_WECOM_{TOKEN,AES_KEY,RECEIVE_ID}, GRAYLANE_TEAMS_SECURITY_TOKEN. A platform without
        them refuses everything."""
        env = os.environ if env is None else env
        return cls(**{name: env.get(f"GRAYLANE_{name.upper()}", "") for name in cls.__dataclass_fields__})

    def platforms(self) -> dict[str, Platform]:
        wecom = WeCom(self.wecom_token, self.wecom_aes_key, self.wecom_receive_id)
        if self.wecom_aes_key:
            _ = wecom.cipher.key if wecom.cipher else None  # a malformed key fails at startup, naming it
        keys(self.teams_security_token)  # so does a Teams security token that is not base64
        return {
            "slack": Slack(self.slack_signing_secret),
            "dingtalk": DingTalk(self.dingtalk_app_secret),
            "feishu": Feishu(self.feishu_verification_token, self.feishu_encrypt_key),
            "wecom": wecom,
            "teams": Teams(self.teams_security_token),
        }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": brief(message)}, status_code=status)


def _response(reply: Reply) -> Response:
    if isinstance(reply.body, str):
        return Response(reply.body, status_code=reply.status, media_type=reply.media_type)
    return JSONResponse(reply.body, status_code=reply.status)


def chatops_routes(
    platforms: Mapping[str, Platform], approvals: Approvals, now: Callable[[], float] = time.time
) -> list[BaseRoute]:
    async def handle(request: Request) -> Response:
        name = request.path_params["platform"]
        platform = platforms.get(name)
        if platform is None:
            return _error(404, f"unknown chat platform; known: {', '.join(platforms)}")
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = dict(request.query_params)
        try:
            if request.method == "GET":
                handshake = getattr(platform, "handshake", None)
                if handshake is None:
                    return _error(405, f"chat platform {name} takes POST only")
                return _response(handshake(query, now()))
            body = await request.body()
            platform.authenticate(headers, query, body, now())
            inbound = platform.parse(headers, query, body)
        except Unauthenticated as err:
            return _error(401, str(err))
        except Forbidden as err:
            return _error(403, str(err))
        except Malformed as err:
            return _error(err.status, str(err))
        except ConfigError as err:
            log.error("chat platform %s is misconfigured: %s", name, err)
            return _error(503, f"chat platform {name} is misconfigured: {err}")
        if inbound.handshake is not None:
            return _response(inbound.handshake)
        result = await run_in_threadpool(_run, approvals, inbound)
        return _response(platform.render(result, inbound))

    return [
        Route("/chatops/{platform}", handle, methods=["GET", "POST"]),
        Route("/chatops/{platform}/{kind}", handle, methods=["GET", "POST"]),
    ]


def _run(approvals: Approvals, inbound: Inbound) -> Result:
    assert inbound.requester is not None
    try:
        cmd = parse(inbound.text)
    except UsageError as err:
        return Result(400, "invalid", str(err), action="help")
    return approvals.execute(
        CommandRequest(
            app=cmd.app,
            action=cmd.action,
            requester=inbound.requester,
            gate=cmd.gate,
            weight=cmd.weight,
            params=cmd.params,
            version=cmd.version,
            reason=cmd.reason,
            limit=cmd.limit,
            delivery=inbound.delivery,
            release=cmd.release,
        )
    )
