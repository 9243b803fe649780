"""IvrBedrockAgentStack: the Bedrock agent that runs the conversation, and its alias.

The agent's three action groups call the Lambdas of IvrLambdaStack. Its schemas are not
written here: they are generated from the appointments API's OpenAPI document
(``esl_app.http.actiongroups``), so the tools the model sees cannot drift from the API.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import ArnFormat, CfnOutput, Stack, Tags
from aws_cdk import aws_bedrock as bedrock
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from .config import IvrDeployConfig

__all__ = ["INSTRUCTIONS_FILE", "IvrBedrockAgentStack", "load_instructions"]

INSTRUCTIONS_FILE = Path(__file__).resolve().parents[1] / "agent_instructions.txt"

#: Bedrock's limits on an agent's instruction text.
_INSTRUCTION_MIN, _INSTRUCTION_MAX = 40, 4000


def load_instructions(path: Path = INSTRUCTIONS_FILE) -> str:
    """Read the agent's instruction text, checking Bedrock's length limits at synth time."""
    text = path.read_text(encoding="utf-8").strip()
    if not _INSTRUCTION_MIN <= len(text) <= _INSTRUCTION_MAX:
        raise ValueError(
            f"{path}: instruction is {len(text)} characters; Bedrock accepts "
            f"{_INSTRUCTION_MIN}..{_INSTRUCTION_MAX}"
        )
    return text


class IvrBedrockAgentStack(Stack):
    """Agent service role, agent with three Lambda action groups, alias, invoke permissions."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: IvrDeployConfig,
        functions: Mapping[str, lambda_.IFunction],
        schemas: Mapping[str, Mapping[str, Any]],
        instruction: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        if set(functions) != set(schemas):
            raise ValueError(
                f"action groups differ: functions {sorted(functions)}, schemas {sorted(schemas)}"
            )

        model_arn = self.format_arn(
            service="bedrock",
            account="",  # foundation models are AWS-owned: their ARNs have no account
            resource="foundation-model",
            resource_name=config.model_id,
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        # The agent's ARN is unknown until the agent exists, and the agent needs this role
        # to be created: the trust condition can only name "any agent of this account in
        # this region" (the pattern AWS documents for agent service roles).
        any_agent_here = self.format_arn(
            service="bedrock",
            resource="agent",
            resource_name="*",
            arn_format=ArnFormat.SLASH_RESOURCE_NAME,
        )
        role = iam.Role(
            self,
            "AgentRole",
            description="Service role of the ivr Bedrock agent: invoke its one model",
            assumed_by=iam.ServicePrincipal("bedrock.amazonaws.com").with_conditions(
                {
                    # Confused-deputy protection: only Bedrock acting for our own agents.
                    "StringEquals": {"aws:SourceAccount": self.account},
                    "ArnLike": {"aws:SourceArn": any_agent_here},
                }
            ),
            inline_policies={
                "InvokeFoundationModel": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            sid="InvokeConfiguredModel",
                            actions=["bedrock:InvokeModel"],
                            resources=[model_arn],
                        )
                    ]
                )
            },
        )

        action_groups = [
            bedrock.CfnAgent.AgentActionGroupProperty(
                action_group_name=name,
                description=_description(schemas[name]),
                action_group_executor=bedrock.CfnAgent.ActionGroupExecutorProperty(
                    lambda_=functions[name].function_arn
                ),
                api_schema=bedrock.CfnAgent.APISchemaProperty(
                    payload=json.dumps(schemas[name], sort_keys=True)
                ),
            )
            for name in sorted(schemas)
        ]
        agent = bedrock.CfnAgent(
            self,
            "Agent",
            agent_name=f"ivr-{config.env_name}",
            description="ivr phone receptionist: finds slots, books, hands off to staff",
            foundation_model=config.model_id,
            agent_resource_role_arn=role.role_arn,
            instruction=instruction,
            action_groups=action_groups,
            # Sessions are keyed by the call's UUID; keep one alive through a call's
            # pauses (a caller fetching a diary) but drop it soon after hang-up.
            idle_session_ttl_in_seconds=config.idle_session_ttl_seconds,
            # Prepare on every change so the alias below always gets a usable version.
            auto_prepare=True,
        )

        permissions = []
        for name in sorted(functions):
            permissions.append(
                lambda_.CfnPermission(
                    self,
                    f"Invoke{name[0].upper()}{name[1:]}",
                    action="lambda:InvokeFunction",
                    function_name=functions[name].function_arn,
                    principal="bedrock.amazonaws.com",
                    # Only this agent may call the function, not any agent in the account.
                    source_arn=agent.attr_agent_arn,
                    source_account=self.account,
                )
            )

        # An alias only creates a new agent version when the alias itself changes, so tie
        # its description to everything that defines the agent: a new instruction or
        # schema then reaches callers on deploy instead of staying on the old version.
        fingerprint = hashlib.sha256(
            json.dumps(
                [instruction, config.model_id, dict(schemas)], sort_keys=True
            ).encode()
        ).hexdigest()[:12]
        alias = bedrock.CfnAgentAlias(
            self,
            "AgentAlias",
            agent_alias_name="live",
            agent_id=agent.attr_agent_id,
            description=f"ivr {config.env_name} live alias, agent definition {fingerprint}",
        )
        # Callers reach the agent through the alias: the tools must be callable by then.
        for permission in permissions:
            alias.node.add_dependency(permission)

        self.agent = agent
        self.alias = alias
        self.role = role

        prefix = f"ivr-{config.env_name}"
        CfnOutput(
            self,
            "AgentId",
            value=agent.attr_agent_id,
            description="tenants.yaml bedrock.agent_id",
            export_name=f"{prefix}-agent-id",
        )
        CfnOutput(
            self,
            "AgentAliasId",
            value=alias.attr_agent_alias_id,
            description="tenants.yaml bedrock.alias_id",
            export_name=f"{prefix}-agent-alias-id",
        )
        CfnOutput(
            self,
            "AgentRegion",
            value=self.region,
            description="tenants.yaml bedrock.region",
        )
        Tags.of(self).add("ivr:environment", config.env_name)


def _description(schema: Mapping[str, Any]) -> str:
    """The action group's description: the schema's own summary, within Bedrock's limit."""
    info = schema.get("info", {})
    text = str(info.get("description") or info.get("title") or "")
    return text[:200]
