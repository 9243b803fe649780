"""The ivr CDK app: IvrLambdaStack (action-group Lambdas) and IvrBedrockAgentStack."""

from .agent_stack import IvrBedrockAgentStack
from .application import AGENT_STACK_NAME, LAMBDA_STACK_NAME, IvrApp, build_app
from .config import ConfigError, IvrDeployConfig
from .lambda_stack import FUNCTIONS, IvrLambdaStack

__all__ = [
    "AGENT_STACK_NAME",
    "FUNCTIONS",
    "LAMBDA_STACK_NAME",
    "ConfigError",
    "IvrApp",
    "IvrBedrockAgentStack",
    "IvrDeployConfig",
    "IvrLambdaStack",
    "build_app",
]
