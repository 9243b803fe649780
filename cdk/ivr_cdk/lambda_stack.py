"""IvrLambdaStack: the three Bedrock action-group handlers from ``lambdas/``.

Each function gets its own execution role so a bug or compromise in one handler cannot
read another's logs or widen its reach: it may write to its own log group and read the
API-tokens secret, nothing more. The ARNs are exported so operators (and other stacks)
can find the functions without knowing generated names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import ArnFormat, CfnOutput, Duration, RemovalPolicy, Stack, Tags
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from .config import IvrDeployConfig

__all__ = ["FUNCTIONS", "LAMBDAS_DIR", "FunctionSpec", "IvrLambdaStack", "secret_arn_pattern"]

#: Repository folder holding the handlers (stdlib only, so no bundling step is needed).
LAMBDAS_DIR = Path(__file__).resolve().parents[2] / "lambdas"

#: Files in ``lambdas/`` that must not ship in the deployment package. ``__init__.py`` only
#: makes the folder a package for the tests; Lambda imports the handlers as top-level modules.
ASSET_EXCLUDES = ["__init__.py", "__pycache__", "*.pyc", ".pytest_cache", "tests", "*.md", ".*"]


@dataclass(frozen=True)
class FunctionSpec:
    """One action-group handler: the action it serves and where its code lives."""

    action: str  # action-group name, as in action_group_schemas()
    name: str  # Lambda function name
    module: str  # module in lambdas/ exposing handler(event, context)
    construct_id: str
    description: str


FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec(
        "searchSlots",
        "ivr-search-slots",
        "search_slots",
        "SearchSlots",
        "Bedrock action group searchSlots: free appointment slots from the ivr API",
    ),
    FunctionSpec(
        "confirmAppointment",
        "ivr-confirm-appointment",
        "confirm_appointment",
        "ConfirmAppointment",
        "Bedrock action group confirmAppointment: books a slot through the ivr API",
    ),
    FunctionSpec(
        "handoffToHuman",
        "ivr-handoff-human",
        "handoff_human",
        "HandoffHuman",
        "Bedrock action group handoffToHuman: asks the ivr call to transfer to staff",
    ),
)


def secret_arn_pattern(stack: Stack, secret_name: str) -> str:
    """ARN matching the named secret, whatever random suffix Secrets Manager gave it.

    Secrets Manager appends ``-`` and six random characters to every secret's ARN, so a
    policy naming a secret (rather than holding its full ARN) must end in ``-??????``.
    AWS documents exactly this pattern; ``?`` matches one character, so unlike ``-*`` it
    cannot also match a different secret whose name merely starts with ours.
    """
    return stack.format_arn(
        service="secretsmanager",
        resource="secret",
        resource_name=f"{secret_name}-??????",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )


class IvrLambdaStack(Stack):
    """The action-group Lambdas, their log groups and least-privilege roles."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: IvrDeployConfig,
        lambdas_dir: Path = LAMBDAS_DIR,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        #: action name -> function, for the agent stack's action groups and permissions.
        self.functions: dict[str, lambda_.Function] = {}

        # One asset for all three: they share lambdas/common.py.
        code = lambda_.Code.from_asset(str(lambdas_dir), exclude=ASSET_EXCLUDES)
        secret_arn = secret_arn_pattern(self, config.tokens_secret)

        for spec in FUNCTIONS:
            self.functions[spec.action] = self._function(spec, code, secret_arn)

        Tags.of(self).add("ivr:environment", config.env_name)

    def _function(
        self, spec: FunctionSpec, code: lambda_.Code, secret_arn: str
    ) -> lambda_.Function:
        """Create one handler with its own log group and role."""
        scope = Construct(self, spec.construct_id)
        # An explicit log group (not the one Lambda would create on first write) so
        # retention is set and the group is removed with the stack.
        log_group = logs.LogGroup(
            scope,
            "Logs",
            log_group_name=f"/aws/lambda/{spec.name}",
            retention=self.config.log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        role = iam.Role(
            scope,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Execution role of {spec.name}: own logs, API tokens secret",
            # Inline, so the role is complete the moment the function can run.
            inline_policies={
                "LogsAndTokens": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            sid="WriteOwnLogs",
                            # The group exists already, so no logs:CreateLogGroup.
                            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                            # log_group_arn ends in ":*", covering its log streams.
                            resources=[log_group.log_group_arn],
                        ),
                        iam.PolicyStatement(
                            sid="ReadApiTokens",
                            actions=["secretsmanager:GetSecretValue"],
                            resources=[secret_arn],
                        ),
                    ]
                )
            },
        )
        fn = lambda_.Function(
            scope,
            "Function",
            function_name=spec.name,
            description=spec.description,
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler=f"{spec.module}.handler",
            code=code,
            # One HTTPS call to the API per invocation: small and quick, and a hung API
            # must fail fast enough for the agent to apologise while the caller waits.
            memory_size=128,
            timeout=Duration.seconds(10),
            role=role,
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            application_log_level_v2=lambda_.ApplicationLogLevel.INFO,
            system_log_level_v2=lambda_.SystemLogLevel.WARN,
            environment={
                "IVR_API_URL": self.config.api_url,
                "IVR_API_TOKENS_SECRET": self.config.tokens_secret,
            },
        )
        # CDK adds DependsOn: role so that separately attached policies exist before the
        # function runs. Our policy is inline in the role and the function already refers
        # to the role by GetAtt, so the extra edge is redundant (cfn-lint W3005).
        cfn_function = fn.node.default_child
        assert isinstance(cfn_function, lambda_.CfnFunction)
        cfn_function.add_deletion_override("DependsOn")
        CfnOutput(
            self,
            f"{spec.construct_id}Arn",
            value=fn.function_arn,
            description=f"ARN of {spec.name}",
            export_name=f"ivr-{self.config.env_name}-{spec.name.removeprefix('ivr-')}-arn",
        )
        return fn
