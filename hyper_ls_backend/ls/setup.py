"""``hyper-ls connect``: prepare a Label Studio project and connect the backend to it."""

from __future__ import annotations

import base64

from label_studio_sdk import LabelStudio

from hyper_ls_backend.ls.client import LabelStudioClient
from hyper_ls_backend.ls.label_config import parse_label_config
from hyper_ls_backend.settings import Settings

WEBHOOK_ACTIONS = (
    "TASKS_CREATED",
    "ANNOTATION_CREATED",
    "ANNOTATION_UPDATED",
    "ANNOTATIONS_DELETED",
)
"""The project events the backend acts on: an import, and the labels humans give, change
or delete. It ignores the rest, among them ``ANNOTATIONS_CREATED``, which the write-back's
own bulk annotations raise. (``START_TRAINING`` does not go through the webhook: Label
Studio posts it to ``/webhook`` itself.)"""


def connect_project(
    settings: Settings,
    backend_url: str,
    project_id: int | None,
    title: str,
    label_config: str,
) -> int:
    """Create (or update) the project, install the config, connect the backend (its webhook
    narrowed to the events it acts on: ``configure_webhook``), add tabs, and make sure
    the judge has its own user to credit its annotations to (the owner of
    ``LABEL_STUDIO_JUDGE_API_KEY``, checked here, else the one the backend creates).

    ``maximum_annotations=1`` makes an AI-labelled task leave the labeling stream once the
    backend annotates it.
    """
    parse_label_config(label_config)  # fail here, not in Label Studio, on an unusable config
    judge_key = settings.label_studio_judge_api_key
    client = LabelStudioClient.connect(
        settings.label_studio_url,
        settings.label_studio_api_key.get_secret_value(),
        judge_key.get_secret_value() if judge_key else None,
    )
    sdk = client.sdk
    if project_id is None:
        project_id = sdk.projects.create(title=title, label_config=label_config).id
    else:
        sdk.projects.update(id=project_id, label_config=label_config)
    sdk.projects.update(id=project_id, maximum_annotations=1, show_collab_predictions=True)
    auth = (
        {
            "auth_method": "BASIC_AUTH",
            "basic_auth_user": settings.basic_auth_user,
            "basic_auth_pass": settings.basic_auth_pass.get_secret_value(),
        }
        if settings.basic_auth_user and settings.basic_auth_pass
        else {}
    )
    if not any(backend.url == backend_url for backend in sdk.ml.list(project=project_id)):
        sdk.ml.create(
            project=project_id, url=backend_url, title="HyPER router", is_interactive=False, **auth
        )
    configure_webhook(
        sdk,
        project_id,
        backend_url,
        (auth["basic_auth_user"], auth["basic_auth_pass"]) if auth else None,
    )
    client.ensure_tabs(project_id)
    client.judge_user_id()
    return project_id


def configure_webhook(
    sdk: LabelStudio, project_id: int, backend_url: str, basic_auth: tuple[str, str] | None
) -> None:
    """Narrow the webhook Label Studio created for the backend to ``WEBHOOK_ACTIONS``, and
    give it the basic-auth header if the backend asks for one.

    Label Studio creates ``<backend>/webhook`` for every action, with its payload, and
    without Redis calls it inside the request that raised the event. So the write-back's
    bulk "predictions to annotations" waited while Label Studio serialised every annotation
    it had made, and its task, for an ``ANNOTATIONS_CREATED`` the backend then ignores: 300
    annotations took 1.65-1.74 s with that webhook and 0.44-0.73 s with this one
    (``benchmarks/label_studio_writes.py``). It also sends the ML backend's credentials on
    /health, /setup and /predict but creates the webhook without them: behind basic auth
    every TASKS_CREATED would be refused (401) and no task ever routed.

    The actions go in the same update as the header: Label Studio 1.23 clears a webhook's
    actions on any update that does not name them (``webhooks/serializers.py``).
    """
    url = backend_url.rstrip("/") + "/webhook"
    for webhook in sdk.webhooks.list(project=str(project_id)):
        if webhook.url != url:
            continue
        headers = dict(webhook.headers or {})
        if basic_auth is not None:
            token = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        sdk.webhooks.update(
            id=webhook.id,
            send_for_all_actions=False,
            actions=list(WEBHOOK_ACTIONS),
            send_payload=True,
            headers=headers,
        )
