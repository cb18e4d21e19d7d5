"""``hyper-ls connect``: prepare a Label Studio project and connect the backend to it."""

from __future__ import annotations

import base64

from label_studio_sdk import LabelStudio

from hyper_ls_backend.ls.client import LabelStudioClient
from hyper_ls_backend.ls.label_config import parse_label_config
from hyper_ls_backend.settings import Settings


def connect_project(
    settings: Settings,
    backend_url: str,
    project_id: int | None,
    title: str,
    label_config: str,
) -> int:
    """Create (or update) the project, install the config, connect the backend, add tabs,
    and make sure the judge has its own user to credit its annotations to (the owner of
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
    if auth:
        authorize_webhook(
            sdk, project_id, backend_url, auth["basic_auth_user"], auth["basic_auth_pass"]
        )
    client.ensure_tabs(project_id)
    client.judge_user_id()
    return project_id


def authorize_webhook(
    sdk: LabelStudio, project_id: int, backend_url: str, user: str, password: str
) -> None:
    """Give the webhook Label Studio created for the backend the basic-auth header.

    Label Studio sends the ML backend's credentials on /health, /setup and /predict, but
    creates the ``<backend>/webhook`` webhook without them: behind basic auth every
    TASKS_CREATED would be refused (401) and no task ever routed.
    """
    url = backend_url.rstrip("/") + "/webhook"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    for webhook in sdk.webhooks.list(project=str(project_id)):
        headers = dict(webhook.headers or {})
        if webhook.url == url and headers.get("Authorization") != f"Basic {token}":
            sdk.webhooks.update(
                id=webhook.id, headers={**headers, "Authorization": f"Basic {token}"}
            )
