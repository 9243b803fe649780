"""Synthesise IvrLambdaStack and IvrBedrockAgentStack and check what they would deploy.

The app is synthesised once per module (jsii is slow); every test reads the templates.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# jsii prints a banner on every start with Node 20; it is noise here, not a test failure.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "18,20")

cdk = pytest.importorskip("aws_cdk")
from aws_cdk.assertions import Annotations, Match, Template  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "cdk"))

from ivr_cdk import FUNCTIONS, build_app  # noqa: E402
from ivr_cdk.agent_stack import INSTRUCTIONS_FILE, load_instructions  # noqa: E402
from ivr_cdk.application import default_context  # noqa: E402
from ivr_cdk.config import ConfigError, IvrDeployConfig  # noqa: E402

from esl_app.http.actiongroups import action_group_schemas  # noqa: E402

REGION = "eu-west-1"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
CONTEXT = {
    "envName": "test",
    "region": REGION,
    "apiUrl": "https://api.clinic.test/ivr",
    "tokensSecret": "ivr/test/api-tokens",
}
ACCOUNT = {"Ref": "AWS::AccountId"}
PARTITION = {"Ref": "AWS::Partition"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    saved = os.environ.pop("CDK_DEFAULT_ACCOUNT", None)  # keep the templates account-agnostic
    try:
        built = build_app(CONTEXT, outdir=str(tmp_path_factory.mktemp("cdk.out")))
        lambda_template = Template.from_stack(built.lambda_stack)
        agent_template = Template.from_stack(built.agent_stack)
        annotations = {
            stack.stack_name: Annotations.from_stack(stack)
            for stack in (built.lambda_stack, built.agent_stack)
        }
    finally:
        if saved is not None:
            os.environ["CDK_DEFAULT_ACCOUNT"] = saved
    return {
        "built": built,
        "outdir": Path(built.app.outdir),
        "lambda": lambda_template,
        "agent": agent_template,
        "lambda_json": lambda_template.to_json(),
        "agent_json": agent_template.to_json(),
        "annotations": annotations,
    }


@pytest.fixture(scope="module")
def lambda_t(synth: dict[str, Any]) -> Template:
    return synth["lambda"]


@pytest.fixture(scope="module")
def agent_t(synth: dict[str, Any]) -> Template:
    return synth["agent"]


# -- helpers -----------------------------------------------------------------------------


def flat(value: Any) -> str:
    """Render an intrinsic-laden value as text, so ARNs can be compared as strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Fn::Join":
            return arg[0].join(flat(part) for part in arg[1])
        if key == "Ref":
            return "${" + arg + "}"
        if key == "Fn::GetAtt":
            return "${" + ".".join(arg) + "}"
        if key == "Fn::ImportValue":
            return "${Import:" + flat(arg) + "}"
        if key == "Fn::Sub":
            return arg
    return json.dumps(value, sort_keys=True)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def resources_of(template_json: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template_json["Resources"].items() if v["Type"] == type_}


def logical_id(template_json: dict[str, Any], type_: str, **props: Any) -> str:
    matches = [
        k
        for k, v in resources_of(template_json, type_).items()
        if all(v["Properties"].get(p) == want for p, want in props.items())
    ]
    assert len(matches) == 1, (type_, props, matches)
    return matches[0]


def all_statements(template_json: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every IAM statement in the template: (resource id, where, statement)."""
    found = []
    for rid, res in template_json["Resources"].items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::IAM::Role":
            for st in props["AssumeRolePolicyDocument"]["Statement"]:
                found.append((rid, "trust", st))
            for policy in props.get("Policies", []):
                for st in policy["PolicyDocument"]["Statement"]:
                    found.append((rid, "identity", st))
        elif res["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            for st in props["PolicyDocument"]["Statement"]:
                found.append((rid, "identity", st))
    return found


def function_arn_export(lambda_json: dict[str, Any], fn_id: str) -> set[str]:
    """Export names under which the Lambda stack publishes this function's ARN."""
    return {
        out["Export"]["Name"]
        for out in lambda_json["Outputs"].values()
        if out.get("Value") == {"Fn::GetAtt": [fn_id, "Arn"]} and "Export" in out
    }


# -- IvrLambdaStack ----------------------------------------------------------------------


def test_lambda_stack_has_exactly_the_expected_resources(synth: dict[str, Any]) -> None:
    types = sorted(r["Type"] for r in synth["lambda_json"]["Resources"].values())
    assert types == sorted(
        ["AWS::Lambda::Function", "AWS::Logs::LogGroup", "AWS::IAM::Role"] * 3
    )
    assert synth["built"].lambda_stack.stack_name == "IvrLambdaStack"
    assert synth["built"].agent_stack.stack_name == "IvrBedrockAgentStack"


@pytest.mark.parametrize("spec", FUNCTIONS, ids=lambda s: s.name)
def test_function_configuration(lambda_t: Template, synth: dict[str, Any], spec: Any) -> None:
    tj = synth["lambda_json"]
    log_id = logical_id(tj, "AWS::Logs::LogGroup", LogGroupName=f"/aws/lambda/{spec.name}")
    lambda_t.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "FunctionName": spec.name,
            "Runtime": "python3.12",
            "Handler": f"{spec.module}.handler",
            "MemorySize": 128,
            "Timeout": 10,
            "LoggingConfig": {"LogFormat": "JSON", "LogGroup": {"Ref": log_id}},
            "Environment": {
                "Variables": {
                    "IVR_API_URL": CONTEXT["apiUrl"],
                    "IVR_API_TOKENS_SECRET": CONTEXT["tokensSecret"],
                }
            },
            "Code": {"S3Bucket": Match.any_value(), "S3Key": Match.string_like_regexp(r"\.zip$")},
        },
    )
    fn = tj["Resources"][logical_id(tj, "AWS::Lambda::Function", FunctionName=spec.name)]
    props = fn["Properties"]
    assert 128 <= props["MemorySize"] <= 256 and props["Timeout"] <= 10
    assert set(props["Environment"]["Variables"]) == {"IVR_API_URL", "IVR_API_TOKENS_SECRET"}
    lambda_t.has_resource(
        "AWS::Logs::LogGroup",
        {
            "Properties": {"LogGroupName": f"/aws/lambda/{spec.name}", "RetentionInDays": 30},
            "DeletionPolicy": "Delete",
        },
    )


@pytest.mark.parametrize("spec", FUNCTIONS, ids=lambda s: s.name)
def test_each_function_has_its_own_least_privilege_role(synth: dict[str, Any], spec: Any) -> None:
    tj = synth["lambda_json"]
    fn = tj["Resources"][logical_id(tj, "AWS::Lambda::Function", FunctionName=spec.name)]
    role_id = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    log_id = logical_id(tj, "AWS::Logs::LogGroup", LogGroupName=f"/aws/lambda/{spec.name}")
    role = tj["Resources"][role_id]["Properties"]

    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust == {
        "Action": "sts:AssumeRole",
        "Effect": "Allow",
        "Principal": {"Service": "lambda.amazonaws.com"},
    }
    assert "ManagedPolicyArns" not in role  # e.g. AWSLambdaBasicExecutionRole: logs on "*"
    (policy,) = role["Policies"]
    statements = {st["Sid"]: st for st in policy["PolicyDocument"]["Statement"]}
    assert set(statements) == {"WriteOwnLogs", "ReadApiTokens"}

    logs = statements["WriteOwnLogs"]
    assert logs["Effect"] == "Allow"
    assert sorted(as_list(logs["Action"])) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    # Its own group only (the group's Arn attribute covers the group's streams).
    assert logs["Resource"] == {"Fn::GetAtt": [log_id, "Arn"]}

    secret = statements["ReadApiTokens"]
    assert secret["Effect"] == "Allow"
    assert secret["Action"] == "secretsmanager:GetSecretValue"
    assert flat(secret["Resource"]) == (
        f"arn:${{AWS::Partition}}:secretsmanager:{REGION}:${{AWS::AccountId}}:"
        f"secret:{CONTEXT['tokensSecret']}-??????"
    )
    # No other role in the stack is shared with this function.
    users = [
        k
        for k, v in resources_of(tj, "AWS::Lambda::Function").items()
        if v["Properties"]["Role"]["Fn::GetAtt"][0] == role_id
    ]
    assert len(users) == 1


def test_deployment_package_holds_just_the_handlers(synth: dict[str, Any]) -> None:
    keys = {
        fn["Properties"]["Code"]["S3Key"]
        for fn in resources_of(synth["lambda_json"], "AWS::Lambda::Function").values()
    }
    (key,) = keys  # one shared asset: the handlers import lambdas/common.py
    asset = synth["outdir"] / f"asset.{key.removesuffix('.zip')}"
    files = sorted(str(p.relative_to(asset)) for p in asset.rglob("*") if p.is_file())
    modules = sorted(f"{spec.module}.py" for spec in FUNCTIONS)
    assert {"common.py", *modules} <= set(files)
    # Only top-level Python sources ship: no caches, no package marker, no tests.
    assert all(re.fullmatch(r"[a-z_]+\.py", f) for f in files), files
    assert "__init__.py" not in files
    for module in modules:
        assert re.search(r"^def handler\(event", (asset / module).read_text(), re.M), module


def test_lambda_arns_are_exported(synth: dict[str, Any]) -> None:
    tj = synth["lambda_json"]
    for spec in FUNCTIONS:
        fn_id = logical_id(tj, "AWS::Lambda::Function", FunctionName=spec.name)
        short = spec.name.removeprefix("ivr-")
        assert f"ivr-test-{short}-arn" in function_arn_export(tj, fn_id)


# -- IvrBedrockAgentStack ----------------------------------------------------------------


def test_agent_stack_has_exactly_the_expected_resources(synth: dict[str, Any]) -> None:
    types = sorted(r["Type"] for r in synth["agent_json"]["Resources"].values())
    assert types == sorted(
        ["AWS::IAM::Role", "AWS::Bedrock::Agent", "AWS::Bedrock::AgentAlias"]
        + ["AWS::Lambda::Permission"] * 3
    )
    deps = {d.node.id for d in synth["built"].agent_stack.dependencies}
    assert deps == {"IvrLambdaStack"}


def test_agent_role_trust_has_source_conditions(synth: dict[str, Any]) -> None:
    (role,) = resources_of(synth["agent_json"], "AWS::IAM::Role").values()
    (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole" and trust["Effect"] == "Allow"
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}
    # The one wildcard in the agent stack, and AWS's documented pattern: the agent's id
    # does not exist until the agent is created with this role.
    assert flat(trust["Condition"]["ArnLike"]["aws:SourceArn"]) == (
        f"arn:${{AWS::Partition}}:bedrock:{REGION}:${{AWS::AccountId}}:agent/*"
    )


def test_agent_role_may_invoke_only_the_configured_model(synth: dict[str, Any]) -> None:
    (role,) = resources_of(synth["agent_json"], "AWS::IAM::Role").values()
    assert "ManagedPolicyArns" not in role["Properties"]
    (policy,) = role["Properties"]["Policies"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "bedrock:InvokeModel"
    assert flat(statement["Resource"]) == (
        f"arn:${{AWS::Partition}}:bedrock:{REGION}::foundation-model/{MODEL}"
    )


def test_agent_definition(agent_t: Template, synth: dict[str, Any]) -> None:
    aj = synth["agent_json"]
    (role_id,) = resources_of(aj, "AWS::IAM::Role")
    instruction = INSTRUCTIONS_FILE.read_text(encoding="utf-8").strip()
    agent_t.has_resource_properties(
        "AWS::Bedrock::Agent",
        {
            "AgentName": "ivr-test",
            "FoundationModel": MODEL,
            "AgentResourceRoleArn": {"Fn::GetAtt": [role_id, "Arn"]},
            "Instruction": instruction,
            "IdleSessionTTLInSeconds": 600,
            "AutoPrepare": True,
        },
    )
    assert 40 <= len(instruction) <= 4000
    lowered = instruction.lower()
    for phrase in ("one question at a time", "at most three", "confirm", "one character at a time",
                   "handofftohuman"):
        assert phrase in lowered, phrase


def test_action_groups_use_generated_schemas_and_the_right_lambdas(synth: dict[str, Any]) -> None:
    aj, lj = synth["agent_json"], synth["lambda_json"]
    (agent,) = resources_of(aj, "AWS::Bedrock::Agent").values()
    groups = {g["ActionGroupName"]: g for g in agent["Properties"]["ActionGroups"]}
    schemas = action_group_schemas()
    assert set(groups) == set(schemas) == {"searchSlots", "confirmAppointment", "handoffToHuman"}
    by_action = {spec.action: spec for spec in FUNCTIONS}
    for name, group in groups.items():
        assert json.loads(group["ApiSchema"]["Payload"]) == schemas[name]
        assert "S3" not in group["ApiSchema"]
        fn_id = logical_id(lj, "AWS::Lambda::Function", FunctionName=by_action[name].name)
        imported = group["ActionGroupExecutor"]["Lambda"]["Fn::ImportValue"]
        assert imported in function_arn_export(lj, fn_id), name
    # The contract's operations, as the Lambdas route them.
    assert "get" in schemas["searchSlots"]["paths"]["/searchSlots"]
    assert "post" in schemas["confirmAppointment"]["paths"]["/confirmAppointment"]
    assert "post" in schemas["handoffToHuman"]["paths"]["/handoffToHuman"]


def test_lambda_permissions_are_restricted_to_this_agent(synth: dict[str, Any]) -> None:
    aj, lj = synth["agent_json"], synth["lambda_json"]
    (agent_id,) = resources_of(aj, "AWS::Bedrock::Agent")
    permissions = resources_of(aj, "AWS::Lambda::Permission")
    granted = set()
    for perm in permissions.values():
        props = perm["Properties"]
        assert props["Action"] == "lambda:InvokeFunction"
        assert props["Principal"] == "bedrock.amazonaws.com"
        assert props["SourceArn"] == {"Fn::GetAtt": [agent_id, "AgentArn"]}
        assert props["SourceAccount"] == ACCOUNT
        granted.add(props["FunctionName"]["Fn::ImportValue"])
    for spec in FUNCTIONS:
        fn_id = logical_id(lj, "AWS::Lambda::Function", FunctionName=spec.name)
        assert function_arn_export(lj, fn_id) & granted, spec.name
    # No Lambda stack resource grants invoke to anyone (the grants live with the agent).
    assert not resources_of(lj, "AWS::Lambda::Permission")


def test_alias_and_outputs(agent_t: Template, synth: dict[str, Any]) -> None:
    aj = synth["agent_json"]
    (agent_id,) = resources_of(aj, "AWS::Bedrock::Agent")
    (alias_id,) = resources_of(aj, "AWS::Bedrock::AgentAlias")
    alias = aj["Resources"][alias_id]
    assert alias["Properties"]["AgentId"] == {"Fn::GetAtt": [agent_id, "AgentId"]}
    assert alias["Properties"]["AgentAliasName"] == "live"
    # The tools are callable before callers can reach the agent through the alias.
    assert sorted(alias["DependsOn"]) == sorted(resources_of(aj, "AWS::Lambda::Permission"))

    agent_t.has_output(
        "AgentId",
        {"Value": {"Fn::GetAtt": [agent_id, "AgentId"]}, "Export": {"Name": "ivr-test-agent-id"}},
    )
    agent_t.has_output(
        "AgentAliasId",
        {
            "Value": {"Fn::GetAtt": [alias_id, "AgentAliasId"]},
            "Export": {"Name": "ivr-test-agent-alias-id"},
        },
    )
    agent_t.has_output("AgentRegion", {"Value": REGION})


# -- least privilege, across both stacks -------------------------------------------------


def test_no_wildcard_actions_and_only_justified_wildcard_resources(
    synth: dict[str, Any],
) -> None:
    wildcard_resources = []
    for key in ("lambda_json", "agent_json"):
        statements = all_statements(synth[key])
        assert statements
        for rid, where, st in statements:
            assert st["Effect"] == "Allow"
            assert "NotAction" not in st and "NotResource" not in st
            for action in as_list(st["Action"]):
                assert "*" not in action, (rid, action)
            if where == "trust":
                assert "Resource" not in st
                continue
            for resource in as_list(st["Resource"]):
                if "*" in flat(resource):
                    wildcard_resources.append((rid, flat(resource)))
    # No literal "*" in any resource. The one wildcard AWS requires is implicit: a log
    # group's Arn attribute ends in ":*" so PutLogEvents can reach the group's streams.
    # The secret ARN uses "-??????" (Secrets Manager's random suffix) rather than "*".
    assert wildcard_resources == []


def test_synthesis_reports_no_warnings_or_errors(synth: dict[str, Any]) -> None:
    for name, found in synth["annotations"].items():
        assert found.find_warning("*", Match.any_value()) == [], name
        assert found.find_error("*", Match.any_value()) == [], name


def test_synthesised_templates_pass_cfn_lint(synth: dict[str, Any]) -> None:
    from cfnlint.api import lint

    for key in ("lambda_json", "agent_json"):
        text = json.dumps(synth[key])
        matches = lint(text, regions=[REGION])
        problems = [m for m in matches if m.rule.id[0] in "EW"]
        assert problems == [], [f"{m.rule.id} {m.message}" for m in problems]


# -- configuration -----------------------------------------------------------------------


def test_cdk_json_runs_the_app_and_holds_every_default() -> None:
    data = json.loads((ROOT / "cdk" / "cdk.json").read_text())
    assert data["app"] == "python3 app.py"
    cfg = IvrDeployConfig.from_context(default_context().get)
    assert cfg.model_id == MODEL
    assert cfg.idle_session_ttl_seconds == 600
    assert cfg.api_url.startswith("https://")
    # No account ids anywhere in the app's code or defaults.
    for path in [ROOT / "cdk" / "cdk.json", ROOT / "cdk" / "app.py",
                 *sorted((ROOT / "cdk" / "ivr_cdk").glob("*.py"))]:
        assert not re.search(r"(?<!\d)\d{12}(?!\d)", path.read_text()), path


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("apiUrl", "http://api.clinic.test"),
        ("apiUrl", "api.clinic.test"),
        ("envName", "Prod!"),
        ("region", "moon-1"),
        ("modelId", "claude"),
        ("tokensSecret", "bad secret name"),
        ("logRetentionDays", "31"),
        ("logRetentionDays", "month"),
        ("idleSessionTtlSeconds", "5"),
        ("tokensSecret", ""),
    ],
)
def test_bad_context_is_rejected_naming_the_key(key: str, value: str) -> None:
    context = {**default_context(), key: value}
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        IvrDeployConfig.from_context(context.get)


def test_cli_style_string_context_is_parsed() -> None:
    context = {**default_context(), "logRetentionDays": "14", "idleSessionTtlSeconds": "900"}
    cfg = IvrDeployConfig.from_context(context.get)
    assert (cfg.log_retention_days, cfg.idle_session_ttl_seconds) == (14, 900)


def test_instruction_length_is_checked(tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Be nice.")
    with pytest.raises(ValueError, match="40"):
        load_instructions(short)
    assert load_instructions() == INSTRUCTIONS_FILE.read_text(encoding="utf-8").strip()


# -- the entry points ---------------------------------------------------------------------


def _child_env(outdir: Path, context: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDK_")}
    # What the cdk CLI passes to "python3 app.py": the output folder and its -c values.
    env.update(CDK_OUTDIR=str(outdir), CDK_CONTEXT_JSON=json.dumps(context))
    return env


def test_app_py_fails_with_one_line_naming_the_bad_key(tmp_path: Path) -> None:
    # Runs the CLI entry point up to validation (cheap); a full CLI-driven synth is slow
    # and the in-process fixture above builds the very same app.
    proc = subprocess.run(
        [sys.executable, "app.py"],
        cwd=ROOT / "cdk",
        env=_child_env(tmp_path / "out", {"apiUrl": "http://plain.clinic.test"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("ivr cdk: apiUrl:")
    assert "Traceback" not in proc.stderr
