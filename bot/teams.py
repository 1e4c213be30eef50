"""The thin adapter between the Microsoft 365 Agents SDK and the SDK-free :class:`~bot.flow.Workflow`.

It translates activities into domain calls (who, where, what) and domain answers back into activities and
invoke responses, and implements proactive messaging (:class:`TeamsNotifier`). No business rules here.
"""

from __future__ import annotations

import logging
from typing import Any

from microsoft_agents.activity import (
    Activity,
    ActivityTypes,
    AdaptiveCardInvokeResponse,
    Attachment,
    ConversationReference,
    Entity,
    InvokeResponse,
)
from microsoft_agents.hosting.aiohttp import CloudAdapter
from microsoft_agents.hosting.core import (
    AgentApplication,
    AgentAuthConfiguration,
    ApplicationOptions,
    ClaimsIdentity,
    ConnectionManager,
    MemoryStorage,
    RouteRank,
    TurnContext,
    TurnState,
)

from bot import messages as m
from bot.auth import ConnectorTokenProvider, service_url_allowed
from bot.connector_pool import PooledClientFactory
from bot.flow import Conversation, InvokeAnswer, Member, Requester, Workflow
from bot.logs import safe
from bot.settings import Settings
from cards import verbs

log = logging.getLogger("bot.teams")

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
_INVOKE_NAME = "adaptiveCard/action"


def card_attachment(card: dict[str, Any]) -> Attachment:
    return Attachment(content_type=CARD_CONTENT_TYPE, content=card)


def activity_tenant(activity: Activity | dict[str, Any]) -> str:
    """The tenant of an activity, from ``channelData.tenant.id`` (always set by Teams), else the conversation."""
    if isinstance(activity, Activity):
        channel_data: Any = activity.channel_data or {}
        conv_tenant = activity.conversation.tenant_id if activity.conversation else None
    else:
        channel_data = activity.get("channelData") or {}
        conv_tenant = (activity.get("conversation") or {}).get("tenantId")
    tenant = channel_data.get("tenant") if isinstance(channel_data, dict) else None
    if isinstance(tenant, dict) and tenant.get("id"):
        return str(tenant["id"])
    return str(conv_tenant or "")


def requester_of(activity: Activity) -> Requester:
    sender = activity.from_property
    return Requester(
        aad_id=str(getattr(sender, "aad_object_id", None) or ""),
        name=str(getattr(sender, "name", None) or "Someone")[:200],
        mri=str(getattr(sender, "id", None) or ""),
        tenant_id=activity_tenant(activity),
    )


def conversation_of(activity: Activity) -> Conversation:
    reference = activity.get_conversation_reference().model_dump(mode="json", by_alias=True, exclude_none=True)
    conv = activity.conversation
    return Conversation(
        id=str(conv.id if conv else ""),
        type=str((conv.conversation_type if conv else None) or "personal"),
        reference=reference,
    )


def mentions_bot(activity: Activity) -> bool:
    bot_id = activity.recipient.id if activity.recipient else None
    for entity in activity.entities or []:
        data = entity.model_dump(by_alias=True) if hasattr(entity, "model_dump") else dict(entity)
        mentioned = data.get("mentioned") or {}
        if data.get("type") == "mention" and mentioned.get("id") == bot_id:
            return True
    return False


def invoke_response(answer: InvokeAnswer) -> AdaptiveCardInvokeResponse:
    if answer.error:
        status, code, message = answer.error
        return AdaptiveCardInvokeResponse(
            status_code=status,
            type="application/vnd.microsoft.error",
            value={"code": code, "message": message},
        )
    if answer.card is not None:
        return AdaptiveCardInvokeResponse(status_code=200, type=CARD_CONTENT_TYPE, value=answer.card)
    return AdaptiveCardInvokeResponse(
        status_code=200, type="application/vnd.microsoft.activity.message", value=answer.message or ""
    )


class TeamsNotifier:
    """Proactive updates and messages through the adapter, with the stored conversation reference."""

    def __init__(self, adapter: CloudAdapter, settings: Settings) -> None:
        self._adapter = adapter
        self._settings = settings

    async def _continue(self, reference: dict[str, Any], callback: Any) -> None:
        service_url = reference.get("serviceUrl")
        if not service_url_allowed(service_url, self._settings.allowed_service_url_hosts):
            log.warning("proactive send refused: serviceUrl not allowed", extra={"service_url": safe(service_url, 120)})
            raise PermissionError("serviceUrl not on ALLOWED_SERVICE_URL_HOSTS")
        ref = ConversationReference.model_validate(reference)
        continuation = ref.get_continuation_activity()
        if self._settings.anonymous:
            await self._adapter.continue_conversation_with_claims(ClaimsIdentity({}, None), continuation, callback)
        else:
            await self._adapter.continue_conversation(self._settings.bot_client_id or "", continuation, callback)

    async def update(self, reference: dict[str, Any], activity_id: str, card: dict[str, Any]) -> bool:
        async def callback(context: TurnContext) -> None:
            await context.update_activity(
                Activity(type=ActivityTypes.message, id=activity_id, attachments=[card_attachment(card)])
            )

        try:
            await self._continue(reference, callback)
            return True
        except Exception as exc:
            log.warning("card update failed", extra={"activity": safe(activity_id), "error": safe(exc, 300)})
            return False

    async def send(
        self,
        reference: dict[str, Any],
        *,
        text: str | None = None,
        card: dict[str, Any] | None = None,
        mentions: list[Member] | None = None,
    ) -> str | None:
        """A proactive message; each of ``mentions`` is @mentioned (its ``<at>name</at>`` must be in ``text``)."""
        sent: list[str | None] = []

        async def callback(context: TurnContext) -> None:
            activity = Activity(type=ActivityTypes.message, text=text)
            if card is not None:
                activity.attachments = [card_attachment(card)]
            if mentions:
                activity.entities = [
                    Entity.model_validate(
                        {
                            "type": "mention",
                            "text": f"<at>{m.mention(member.name)}</at>",
                            "mentioned": {"id": member.mri, "name": m.mention(member.name)},
                        }
                    )
                    for member in mentions
                ]
            response = await context.send_activity(activity)
            sent.append(response.id if response else None)

        try:
            await self._continue(reference, callback)
        except Exception as exc:
            log.warning("proactive message failed", extra={"error": safe(exc, 300)})
            return None
        return sent[0] if sent else None

    async def members(self, reference: dict[str, Any]) -> list[Member]:
        found: list[Member] = []

        async def callback(context: TurnContext) -> None:
            connector: Any = context.turn_state.get(CloudAdapter._AGENT_CONNECTOR_CLIENT_KEY)
            if connector is None:
                return
            conversation_id = str((reference.get("conversation") or {}).get("id", "")).split(";")[0]
            for account in await connector.conversations.get_conversation_members(conversation_id):
                found.append(Member(str(account.aad_object_id or ""), str(account.id or ""), str(account.name or "")))

        try:
            await self._continue(reference, callback)
        except Exception as exc:
            log.warning("listing members failed", extra={"error": safe(exc, 300)})
        return found


def build_agent(
    settings: Settings,
) -> tuple[AgentApplication[TurnState], CloudAdapter, ConnectionManager]:
    config = settings.sdk_configuration()

    def provider(configuration: AgentAuthConfiguration) -> ConnectorTokenProvider:
        return ConnectorTokenProvider(configuration, settings)

    connection_manager = ConnectionManager(provider, **config)  # type: ignore[arg-type]
    # One keep-alive connection pool for replies and card updates instead of a new TCP connection per turn.
    adapter = CloudAdapter(
        connection_manager=connection_manager,
        channel_service_client_factory=PooledClientFactory(connection_manager),
    )
    app = AgentApplication[TurnState](
        ApplicationOptions(storage=MemoryStorage(), start_typing_timer=False, bot_app_id=settings.bot_client_id or ""),
        connection_manager=connection_manager,
    )
    return app, adapter, connection_manager


async def close_clients(adapter: CloudAdapter) -> None:
    """Release the pooled connector clients (shutdown)."""
    factory = getattr(adapter, "_channel_service_client_factory", None)
    if isinstance(factory, PooledClientFactory):
        await factory.aclose()


def register_routes(app: AgentApplication[TurnState], workflow: Workflow) -> None:
    """One catch-all message route, one invoke route for card actions, welcome on install."""
    welcome = _Welcome()

    @app.conversation_update("membersAdded")
    async def on_members_added(context: TurnContext, _state: TurnState) -> None:
        if _welcome_due(context.activity):
            await welcome.once(context)

    @app.activity(ActivityTypes.installation_update)
    async def on_install(context: TurnContext, _state: TurnState) -> None:
        if str(context.activity.action or "").startswith("add"):
            await welcome.once(context)

    @app.message(rank=RouteRank.LAST)
    async def on_message(context: TurnContext, _state: TurnState) -> None:
        await _on_message(context, workflow)

    @app.invoke(_INVOKE_NAME)
    async def on_card_action(context: TurnContext, _state: TurnState) -> None:
        await _on_card_action(context, workflow)

    @app.error
    async def on_error(context: TurnContext, error: Exception) -> None:
        log.error("turn failed", exc_info=error)
        if context.activity.type == ActivityTypes.invoke:
            await _send_invoke_answer(context, InvokeAnswer(error=(500, "InternalError", m.internal_error())))
        else:
            await context.send_activity(m.internal_error())


class _Welcome:
    """Welcome a conversation once: Teams sends both conversationUpdate and installationUpdate on install."""

    def __init__(self) -> None:
        self._welcomed: set[str] = set()

    async def once(self, context: TurnContext) -> None:
        key = str(context.activity.conversation.id if context.activity.conversation else "")
        if key in self._welcomed:
            return
        if len(self._welcomed) > 10_000:
            self._welcomed.clear()
        self._welcomed.add(key)
        await context.send_activity(m.welcome())


def _welcome_due(activity: Activity) -> bool:
    """Welcome in a personal chat when the user arrives, elsewhere when the bot itself is added."""
    bot_id = activity.recipient.id if activity.recipient else None
    added = activity.members_added or []
    return any(member.id == bot_id for member in added) or (
        (activity.conversation.conversation_type or "personal") == "personal"
        and any(member.id != bot_id for member in added)
    )


async def _on_message(context: TurnContext, workflow: Workflow) -> None:
    activity = context.activity
    conv = conversation_of(activity)
    if conv.type == "channel" and not mentions_bot(activity):
        return  # in channels the bot answers only when @mentioned
    if not activity.text and isinstance(activity.value, dict):
        await _on_submit(context, workflow, conv)
        return
    reply = await workflow.on_message(requester_of(activity), conv, activity.text)
    outgoing = Activity(type=ActivityTypes.message, text=reply.text if reply.card is None else None)
    if reply.card is not None:
        outgoing.attachments = [card_attachment(reply.card)]
        if reply.text:
            await context.send_activity(reply.text)
    response = await context.send_activity(outgoing)
    if reply.action_id or reply.selection_id or reply.batch_id:
        await workflow.card_sent(reply, response.id if response else None)


async def _on_card_action(context: TurnContext, workflow: Workflow) -> None:
    activity = context.activity
    value = activity.value if isinstance(activity.value, dict) else {}
    raw_action = value.get("action")
    action: dict[str, Any] = raw_action if isinstance(raw_action, dict) else {}
    raw_data = action.get("data")
    data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
    verb = str(action.get("verb") or "")
    if verb not in verbs.ALL:
        answer = InvokeAnswer(error=(400, "BadRequest", m.card_unknown_request()))
    else:
        answer = await workflow.on_invoke(requester_of(activity), conversation_of(activity), verb, data)
    await _send_invoke_answer(context, answer)


async def _send_invoke_answer(context: TurnContext, answer: InvokeAnswer) -> None:
    """The invoke response (HTTP 200; the answer's own status rides in its body, as Teams expects)."""
    body = invoke_response(answer).model_dump(mode="json", by_alias=True, exclude_none=True)
    await context.send_activity(
        Activity(type=ActivityTypes.invoke_response, value=InvokeResponse(status=200, body=body))
    )


async def _on_submit(context: TurnContext, workflow: Workflow, conv: Conversation) -> None:
    """Action.Submit fallback (older clients): same verbs, answered with a new message instead of a card swap."""
    value = context.activity.value if isinstance(context.activity.value, dict) else {}
    verb = str(value.get("verb") or "")
    if verb not in verbs.ALL:
        await context.send_activity(m.help_text())
        return
    answer = await workflow.on_invoke(requester_of(context.activity), conv, verb, value)
    if answer.card is not None:
        await context.send_activity(Activity(type=ActivityTypes.message, attachments=[card_attachment(answer.card)]))
    elif answer.message or answer.error:
        await context.send_activity(answer.message or (answer.error[2] if answer.error else ""))
