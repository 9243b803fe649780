"""Builds the CDK app: both stacks wired together, from context alone.

Used by ``cdk/app.py`` (the ``cdk`` CLI) and by the tests, so what the tests check is
exactly what ``cdk deploy`` would deploy.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk

from .agent_stack import IvrBedrockAgentStack, load_instructions
from .config import IvrDeployConfig
from .lambda_stack import LAMBDAS_DIR, IvrLambdaStack

__all__ = ["CDK_JSON", "IvrApp", "LAMBDA_STACK_NAME", "AGENT_STACK_NAME", "build_app"]

CDK_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = CDK_DIR.parent
CDK_JSON = CDK_DIR / "cdk.json"

#: CloudFormation stack names; operators and the docs refer to these.
LAMBDA_STACK_NAME = "IvrLambdaStack"
AGENT_STACK_NAME = "IvrBedrockAgentStack"


@dataclass(frozen=True)
class IvrApp:
    """The app and its two stacks, so callers can synthesise or inspect either."""

    app: cdk.App
    config: IvrDeployConfig
    lambda_stack: IvrLambdaStack
    agent_stack: IvrBedrockAgentStack


def default_context() -> dict[str, Any]:
    """The ``context`` block of cdk.json: the single place defaults are kept."""
    return dict(json.loads(CDK_JSON.read_text(encoding="utf-8")).get("context", {}))


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    outdir: str | None = None,
    lambdas_dir: Path = LAMBDAS_DIR,
) -> IvrApp:
    """Create the App with IvrLambdaStack and IvrBedrockAgentStack.

    ``context`` overrides cdk.json's defaults; under the ``cdk`` CLI, its ``-c`` values
    take precedence over both (CDK gives CLI context priority over constructor context).
    """
    app = cdk.App(context={**default_context(), **dict(context or {})}, outdir=outdir)
    config = IvrDeployConfig.from_context(app.node.try_get_context)
    # The account comes from the deployer's credentials (set by the CLI); without it the
    # templates stay account-agnostic and use AWS::AccountId.
    env = cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=config.region)

    lambda_stack = IvrLambdaStack(
        app,
        LAMBDA_STACK_NAME,
        config=config,
        lambdas_dir=lambdas_dir,
        env=env,
        description="ivr: Bedrock action-group Lambdas (searchSlots, confirmAppointment, "
        "handoffToHuman)",
    )
    agent_stack = IvrBedrockAgentStack(
        app,
        AGENT_STACK_NAME,
        config=config,
        functions=lambda_stack.functions,
        schemas=_action_group_schemas(),
        instruction=load_instructions(),
        env=env,
        description="ivr: Bedrock agent, alias and service role for the phone receptionist",
    )
    agent_stack.node.add_dependency(lambda_stack)
    return IvrApp(app, config, lambda_stack, agent_stack)


def _action_group_schemas() -> dict[str, dict[str, Any]]:
    """The schemas generated from the appointments API's OpenAPI document."""
    if str(REPO_ROOT) not in sys.path:
        # cdk/ runs as its own app; the schemas live in the ivr package at the repo root.
        sys.path.insert(0, str(REPO_ROOT))
    from esl_app.http.actiongroups import action_group_schemas

    return action_group_schemas()
