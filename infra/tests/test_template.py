"""Structure tests for infra/template.yaml, run by `make validate`.

cfn-lint and `sam validate --lint` miss whole classes of errors (a SAM event property that only
fails in the transform, a bad !Ref), so this test runs the real SAM transform offline and checks
the CloudFormation it produces: every route of docs/openapi.yaml is served by the right function,
and each function's role allows only the actions its code performs. It also evaluates the template's
conditions (`deployed`) to check what a stack gets with and without the optional parameters.
"""

import copy
import json
import os
import re
import unittest

import yaml
from cfnlint.decode import decode
from samtranslator.translator.transform import transform

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TEMPLATE = os.path.join(ROOT, "infra", "template.yaml")
OPENAPI = os.path.join(ROOT, "docs", "openapi.yaml")

# The DynamoDB actions each function's code performs (see shared/src/store/dynamo/), and nothing more.
TABLE_ACTIONS = {
    "IssueFunction": {
        "dynamodb:GetItem",  # idempotency record
        "dynamodb:BatchGetItem",  # license (+ device), idempotent replays
        "dynamodb:Query",  # a license with its devices
        "dynamodb:PutItem",  # new licenses, idempotency record, trial terms
        "dynamodb:UpdateItem",  # patches; a vendor release (tombstone, seat counter or lease)
        "dynamodb:ConditionCheckItem",  # a release of a floating device whose lease was taken over
        "dynamodb:BatchWriteItem",  # undoing a partly written batch
        "dynamodb:Scan",  # every license, a page at a time (GET /v1/licenses with no filter)
    },
    "ActivateFunction": {
        "dynamodb:GetItem",  # trial terms, trial records, receipts of keyed writes
        "dynamodb:BatchGetItem",  # license and device
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:ConditionCheckItem",  # a floating device consuming holds a live lease
    },
    "CheckFunction": {"dynamodb:BatchGetItem", "dynamodb:UpdateItem"},
    # Releases leave a tombstone (UpdateItem): nothing deletes a device or a license.
    # (GetItem and PutItem only on receipts: test_deactivate_writes_only_tombstones_counters_and_receipts.)
    "DeactivateFunction": {
        "dynamodb:BatchGetItem",
        "dynamodb:UpdateItem",
        "dynamodb:ConditionCheckItem",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
    },
}
SIGNS_TOKENS = {"ActivateFunction", "CheckFunction"}
# The license table: the one the stack creates, or ExistingTableName (a restored table).
EXISTING_TABLE_ARN = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${ExistingTableName}"
TABLE_ARN = {"Fn::If": ["CreateTable", {"Fn::GetAtt": ["Table", "Arn"]}, {"Fn::Sub": EXISTING_TABLE_ARN}]}
TABLE_NAME = {"Fn::If": ["CreateTable", {"Ref": "Table"}, {"Ref": "ExistingTableName"}]}


def index_arn(index):
    return {
        "Fn::If": [
            "CreateTable",
            {"Fn::Sub": f"${{Table.Arn}}/index/{index}"},
            {"Fn::Sub": f"{EXISTING_TABLE_ARN}/index/{index}"},
        ]
    }


# The indexes each function may query: the lookups for the vendor API; a rotation's candidates and
# lapsed leases to take over for activate; lapsed leases for check (a heartbeat may retake a seat).
INDEXES = {
    "IssueFunction": [index_arn("*")],
    "ActivateFunction": [index_arn("BySeen"), index_arn("ByLeaseEnd")],
    "CheckFunction": [index_arn("ByLeaseEnd")],
}
NO_VALUE = {"Ref": "AWS::NoValue"}
# The customer-managed key, where one is given (KmsKeyArn), and each role's use of it.
KMS_KEY = {"Fn::If": ["KmsKeyGiven", {"Ref": "KmsKeyArn"}, NO_VALUE]}
KMS_STATEMENT = {
    "Fn::If": [
        "KmsKeyGiven",
        {
            "Sid": "EncryptionKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
            "Resource": {"Ref": "KmsKeyArn"},
            # Only through the services that encrypt for the function: the table and the environment.
            "Condition": {
                "StringEquals": {
                    "kms:ViaService": [
                        {"Fn::Sub": "dynamodb.${AWS::Region}.amazonaws.com"},
                        {"Fn::Sub": "lambda.${AWS::Region}.amazonaws.com"},
                    ]
                }
            },
        },
        NO_VALUE,
    ]
}
# The DynamoDB API operations the store calls (ConditionCheckItem only inside TransactWriteItems):
# DynamoDB reports its SystemErrors per operation, so the alarm sums these.
DYNAMODB_OPERATIONS = {
    "GetItem",
    "BatchGetItem",
    "Query",
    "Scan",
    "PutItem",
    "UpdateItem",
    "BatchWriteItem",
    "TransactWriteItems",
}
ALARM_ACTIONS = {"Fn::If": ["AlarmsNotify", [{"Ref": "AlarmTopicArn"}], NO_VALUE]}
# checkov findings the template suppresses (Metadata: checkov: skip), by resource; every other check passes.
CHECKOV_SKIPS = {function: {"CKV_AWS_116", "CKV_AWS_117"} for function in TABLE_ACTIONS}
ROUTE_OWNERS = {
    "/v1/licenses": "IssueFunction",
    "/v1/licenses/{license_key}": "IssueFunction",
    "/v1/licenses/{license_key}/devices/{hardware_id}": "IssueFunction",
    "/v1/activate": "ActivateFunction",
    "/v1/borrow": "ActivateFunction",
    "/v1/consume": "ActivateFunction",
    "/v1/trial": "ActivateFunction",
    "/v1/activate/offline": "ActivateFunction",
    "/v1/deactivate/offline": "DeactivateFunction",
    "/v1/products/{product}/trial": "IssueFunction",
    "/v1/check": "CheckFunction",
    "/.well-known/jwks.json": "CheckFunction",
    "/v1/deactivate": "DeactivateFunction",
}


class NoManagedPolicies:
    def load(self):
        return {}


def transformed(parameters=None):
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    template, errors = decode(TEMPLATE)
    assert not errors, errors
    template = copy.deepcopy(template)
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            # The transform wants an uploaded artifact; `sam build` puts one there for real.
            resource["Properties"]["CodeUri"] = "s3://bucket/key"
    return transform(template, parameters or {}, NoManagedPolicies())


def condition_values(cfn, parameters):
    """The value of each of the template's conditions, with these parameter values (else the defaults)."""
    values = {name: str(parameters.get(name, p.get("Default", ""))) for name, p in cfn["Parameters"].items()}

    def value(node):
        if isinstance(node, dict) and set(node) == {"Ref"}:
            return values[node["Ref"]]
        assert not isinstance(node, (dict, list)), node
        return str(node).lower() if isinstance(node, bool) else str(node)

    def holds(node):
        ((function, args),) = node.items()
        if function == "Fn::Equals":
            return value(args[0]) == value(args[1])
        if function == "Fn::Not":
            return not holds(args[0])
        if function == "Fn::And":
            return all(holds(a) for a in args)
        if function == "Fn::Or":
            return any(holds(a) for a in args)
        if function == "Condition":
            return holds(cfn["Conditions"][args])
        raise AssertionError(f"unexpected condition function {function}")

    return {name: holds(node) for name, node in cfn.get("Conditions", {}).items()}


def deployed(cfn, parameters):
    """What CloudFormation deploys with these parameters: resources and outputs whose condition is false
    left out, each Fn::If replaced by its branch, AWS::NoValue removed (references stay as they are)."""
    conditions = condition_values(cfn, parameters)
    gone = object()

    def resolve(node):
        if isinstance(node, dict):
            if node == NO_VALUE:
                return gone
            if set(node) == {"Fn::If"}:
                name, yes, no = node["Fn::If"]
                return resolve(yes if conditions[name] else no)
            resolved = {key: resolve(value) for key, value in node.items()}
            return {key: value for key, value in resolved.items() if value is not gone}
        if isinstance(node, list):
            return [r for r in map(resolve, node) if r is not gone]
        return node

    result = {}
    for section in ("Resources", "Outputs"):
        result[section] = {
            name: resolve(item) for name, item in cfn.get(section, {}).items() if conditions.get(item.get("Condition"), True)
        }
    return result


def names(node, name):
    """Whether this Ref, GetAtt or Sub itself (not a value nested in it) names `name`."""
    if not isinstance(node, dict):
        return False
    if "Ref" in node:
        return node["Ref"] == name
    if "Fn::GetAtt" in node:
        value = node["Fn::GetAtt"]
        return (value[0] if isinstance(value, list) else value.split(".")[0]) == name
    if "Fn::Sub" in node:
        value = node["Fn::Sub"]
        text = value if isinstance(value, str) else value[0]
        return re.search(r"\$\{" + re.escape(name) + r"[.}]", text) is not None
    return False


def references(node, name):
    """Every Ref, GetAtt or Sub naming `name` anywhere in node."""
    found = []

    def walk(node):
        if names(node, name):
            found.append(node)
        if isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(node)
    return found


def openapi_routes():
    with open(OPENAPI) as f:
        spec = yaml.safe_load(f)
    return {(method.upper(), path) for path, item in spec["paths"].items() for method in item if method != "parameters"}


def ref_name(value):
    """The logical id a GetAtt/Ref/Sub points at, for the shapes this template uses."""
    if isinstance(value, dict):
        if "Fn::GetAtt" in value:
            return value["Fn::GetAtt"][0]
        if "Ref" in value:
            return value["Ref"]
        if "Fn::Sub" in value:
            return value["Fn::Sub"]
    return value


class TemplateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cfn = transformed()
        cls.resources = cls.cfn["Resources"]
        with open(TEMPLATE) as f:
            cls.source = f.read()

    def served_routes(self):
        """(method, path) -> function, from SAM's generated OpenAPI body and the plain routes."""
        routes = {}
        body = self.resources["Api"]["Properties"]["Body"]
        for path, item in body["paths"].items():
            for method, operation in item.items():
                uri = operation["x-amazon-apigateway-integration"]["uri"]
                routes[(method.upper(), path)] = re.search(r"\$\{(\w+)\.Arn\}", uri["Fn::Sub"]).group(1)
        integrations = {
            name: ref_name(r["Properties"]["IntegrationUri"])
            for name, r in self.resources.items()
            if r["Type"] == "AWS::ApiGatewayV2::Integration"
        }
        for resource in self.resources.values():
            if resource["Type"] == "AWS::ApiGatewayV2::Route":
                method, path = resource["Properties"]["RouteKey"].split(" ", 1)
                target = resource["Properties"]["Target"]["Fn::Sub"].split("${")[1].rstrip("}")
                routes[(method, path)] = integrations[target]
        return routes

    def test_every_documented_route_is_served_by_its_function(self):
        routes = self.served_routes()
        documented = {route for route in routes if route[0] != "OPTIONS"}
        self.assertEqual(documented, openapi_routes())
        for (method, path), function in routes.items():
            self.assertEqual(function, ROUTE_OWNERS[path], f"{method} {path}")

    def test_browsers_may_preflight_client_routes_only(self):
        routes = self.served_routes()
        preflights = {path for (method, path) in routes if method == "OPTIONS"}
        client_paths = {path for (_, path), function in routes.items() if function != "IssueFunction"}
        self.assertEqual(preflights, client_paths)
        for function in TABLE_ACTIONS:
            env = self.resources[function]["Properties"]["Environment"]["Variables"]
            self.assertEqual(env["KEYGATE_CORS_ORIGINS"], {"Ref": "CorsAllowedOrigins"}, function)
        template, _ = decode(TEMPLATE)
        self.assertEqual(template["Parameters"]["CorsAllowedOrigins"]["Default"], "")
        # CORS is answered per route by the functions: an API-wide CorsConfiguration would open
        # the vendor routes to browsers too.
        self.assertNotIn("CorsConfiguration", self.resources["Api"]["Properties"])

    def test_vendor_routes_follow_the_auth_parameter_and_client_routes_are_open(self):
        for resource in self.resources.values():
            if resource["Type"] == "AWS::ApiGatewayV2::Route":
                self.assertEqual(
                    resource["Properties"]["AuthorizationType"], {"Fn::If": ["AdminRoutesUseIam", "AWS_IAM", "NONE"]}
                )
        body = self.resources["Api"]["Properties"]["Body"]
        for item in body["paths"].values():
            for operation in item.values():
                self.assertNotIn("security", operation)

    def policy_statements(self, function, conditional=False):
        """The role's statements; a conditional one (Fn::If) as written, or else as its first branch, so
        that the other tests see the broadest role any parameters give."""
        role = self.resources[f"{function}Role"]
        statements = []
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if "Fn::If" in statement and not conditional:
                    statement = statement["Fn::If"][1]
                statements.append(statement)
        managed = role["Properties"].get("ManagedPolicyArns", [])
        return statements, managed

    def test_each_function_may_do_only_what_its_code_does(self):
        for function, expected in TABLE_ACTIONS.items():
            statements, managed = self.policy_statements(function, conditional=True)
            table_actions, index_actions, ssm, kms = set(), set(), [], []
            for statement in statements:
                if "Fn::If" in statement:
                    kms.append(statement)
                    continue
                self.assertEqual(statement["Effect"], "Allow")
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                resource = statement["Resource"]
                if all(a.startswith("dynamodb:") for a in actions):
                    if resource == TABLE_ARN:
                        table_actions.update(actions)
                    else:
                        resources = resource if isinstance(resource, list) else [resource]
                        self.assertEqual(resources, INDEXES.get(function), function)
                        index_actions.update(actions)
                elif actions == ["ssm:GetParameter"]:
                    ssm.append(resource)
                else:
                    self.fail(f"{function} has an unexpected statement {statement}")
            self.assertEqual(table_actions, expected, function)
            # The vendor API queries the lookup indexes; activate only the rotation candidates.
            self.assertEqual(index_actions, {"dynamodb:Query"} if function in INDEXES else set(), function)
            # Only functions that sign read the signing key, and only that one parameter.
            expected_ssm = [
                {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${SigningKeyParameterName}"}
            ]
            self.assertEqual(ssm, expected_ssm if function in SIGNS_TOKENS else [], function)
            # The customer-managed key, only when one is given.
            self.assertEqual(kms, [KMS_STATEMENT], function)
            # Logging only: SAM's basic execution role, nothing broader.
            self.assertEqual(managed, ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"], function)

    def test_check_cannot_change_a_license(self):
        statements, _ = self.policy_statements("CheckFunction")
        update = [s for s in statements if "dynamodb:UpdateItem" in s["Action"]]
        self.assertEqual(len(update), 1)
        allowed = set(update[0]["Condition"]["ForAllValues:StringEquals"]["dynamodb:Attributes"])
        # A device's sighting, horizon and lease; the license's lease count and layout (no term).
        self.assertEqual(
            allowed,
            {
                "PK",
                "SK",
                "last_seen_at",
                "credential_until",
                "released_at",
                "lease_expires_at",
                "leases_held",
                "leases",
                "moving_leases",
            },
        )
        # Its other actions only read.
        others = {a for s in statements if s not in update for a in s["Action"] if a.startswith("dynamodb:")}
        self.assertEqual(others, {"dynamodb:BatchGetItem", "dynamodb:Query"})

    def test_deactivate_writes_only_tombstones_counters_and_receipts(self):
        statements, _ = self.policy_statements("DeactivateFunction")
        for statement in statements:
            if {"dynamodb:GetItem", "dynamodb:PutItem"} & set(statement["Action"]):
                self.assertEqual(set(statement["Action"]), {"dynamodb:GetItem", "dynamodb:PutItem"})
                self.assertEqual(statement["Condition"], {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["R#*"]}})

    def test_no_function_can_delete_a_single_item(self):
        for function in TABLE_ACTIONS:
            statements, _ = self.policy_statements(function)
            for statement in statements:
                self.assertNotIn("dynamodb:DeleteItem", statement["Action"], function)

    def test_activate_cannot_delete(self):
        statements, _ = self.policy_statements("ActivateFunction")
        for statement in statements:
            self.assertNotIn("dynamodb:DeleteItem", statement["Action"])

    def test_functions_are_cargo_lambda_builds_on_al2023_arm64_by_default(self):
        template, _ = decode(TEMPLATE)
        self.assertEqual(template["Parameters"]["Architecture"]["Default"], "arm64")
        self.assertEqual(set(template["Parameters"]["Architecture"]["AllowedValues"]), {"arm64", "x86_64"})
        functions = {n: r for n, r in template["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}
        self.assertEqual(set(functions), set(TABLE_ACTIONS))
        for name, resource in functions.items():
            self.assertEqual(resource["Metadata"]["BuildMethod"], "rust-cargolambda", name)
            binary = resource["Metadata"]["BuildProperties"]["Binary"]
            self.assertEqual(resource["Properties"]["CodeUri"], f"../functions/{binary}")
            self.assertTrue(os.path.exists(os.path.join(ROOT, "functions", binary, "Cargo.toml")))
        for name, resource in self.resources.items():
            if resource["Type"] == "AWS::Lambda::Function":
                self.assertEqual(resource["Properties"]["Runtime"], "provided.al2023", name)
                self.assertEqual(resource["Properties"]["Architectures"], [{"Ref": "Architecture"}], name)
                self.assertEqual(resource["Properties"]["Handler"], "bootstrap", name)

    def test_table_matches_the_store(self):
        table = self.resources["Table"]["Properties"]
        self.assertEqual(table["BillingMode"], "PAY_PER_REQUEST")
        self.assertEqual([k["AttributeName"] for k in table["KeySchema"]], ["PK", "SK"])
        indexes = {i["IndexName"]: [k["AttributeName"] for k in i["KeySchema"]] for i in table["GlobalSecondaryIndexes"]}
        self.assertEqual(
            indexes,
            {
                "GSI1": ["GSI1PK", "created_at"],
                "GSI2": ["GSI2PK", "created_at"],
                "BySeen": ["PK", "last_seen_at"],
                "ByLeaseEnd": ["PK", "lease_expires_at"],
                "ByProduct": ["product", "created_at"],
            },
        )
        # The stream events are derived from: both images of every change.
        self.assertEqual(table["StreamSpecification"], {"StreamViewType": "NEW_AND_OLD_IMAGES"})
        self.assertEqual(table["TimeToLiveSpecification"], {"AttributeName": "ttl", "Enabled": True})
        self.assertTrue(table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"])
        self.assertEqual(table["DeletionProtectionEnabled"], {"Ref": "TableDeletionProtection"})

    def test_each_function_logs_to_its_own_group_with_retention(self):
        for function in TABLE_ACTIONS:
            group = self.resources[function]["Properties"]["LoggingConfig"]["LogGroup"]
            self.assertEqual(self.resources[group["Ref"]]["Properties"]["RetentionInDays"], {"Ref": "LogRetentionDays"})

    def test_routes_are_throttled_by_kind_and_outputs_name_the_urls(self):
        stages = [r for r in self.resources.values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
        self.assertEqual(len(stages), 1)
        stage = stages[0]["Properties"]
        limits = lambda kind: {
            "ThrottlingBurstLimit": {"Ref": f"{kind}ThrottlingBurstLimit"},
            "ThrottlingRateLimit": {"Ref": f"{kind}ThrottlingRateLimit"},
        }
        # The default applies to the vendor routes (plain routes); each client route has its own.
        self.assertEqual(stage["DefaultRouteSettings"], limits("Vendor"))
        routes = self.served_routes()
        settings = stage["RouteSettings"]
        for (method, path), function in routes.items():
            key = f"{method} {path}"
            if function == "IssueFunction":
                self.assertNotIn(key, settings, "vendor routes take the default")
            elif path == "/v1/trial":
                self.assertEqual(settings[key], limits("Trial"), key)
            else:
                self.assertEqual(settings[key], limits("Client"), key)
        # A route key in RouteSettings must exist when the stage is created: SAM's routes come with
        # the API; a plain route would need the stage to depend on it ("Unable to find Route by key").
        plain = {r["Properties"]["RouteKey"]: name for name, r in self.resources.items() if r["Type"] == "AWS::ApiGatewayV2::Route"}
        stage_name = next(name for name, r in self.resources.items() if r["Type"] == "AWS::ApiGatewayV2::Stage")
        depends = self.resources[stage_name].get("DependsOn", [])
        depends = [depends] if isinstance(depends, str) else depends
        for key in settings:
            if key in plain:
                self.assertIn(plain[key], depends, f"the stage must depend on {plain[key]}")
        self.assertEqual(set(settings) - set(plain), {f"{m} {p}" for (m, p), f in routes.items() if f != "IssueFunction"})
        self.assertIn("ApiUrl", self.cfn["Outputs"])
        self.assertTrue(self.cfn["Outputs"]["JwksUrl"]["Value"]["Fn::Sub"].endswith("/.well-known/jwks.json"))

    def test_admin_token_hashes_may_be_named_as_the_server_reads_them(self):
        template, _ = decode(TEMPLATE)
        pattern = re.compile(template["Parameters"]["AdminTokenHashes"]["AllowedPattern"])
        h = "0123456789abcdef" * 4
        for good in ["", h, f"ci:{h}", f"ci:{h},{h}", f"release-bot_2:{h},ops:{h}"]:
            self.assertTrue(pattern.fullmatch(good), good)
        for bad in [f"CI:{h}", f":{h}", f"{'n' * 33}:{h}", f"ci:{h},", h[:-1], f"a b:{h}"]:
            self.assertFalse(pattern.fullmatch(bad), bad)

    def test_the_token_issuer_is_unique_to_the_deployment_unless_given(self):
        issuer = {
            "Fn::If": [
                "IssuerGiven",
                {"Ref": "TokenIssuer"},
                {"Fn::Sub": "keygate:${AWS::AccountId}:${AWS::Region}:${AWS::StackName}"},
            ]
        }
        for function in TABLE_ACTIONS:
            env = self.resources[function]["Properties"]["Environment"]["Variables"]
            self.assertEqual(env["KEYGATE_ISSUER"], issuer, function)
        self.assertEqual(self.cfn["Outputs"]["TokenIssuer"]["Value"], issuer)

    def test_access_logs_are_json_without_bodies_or_headers(self):
        stage = next(r for r in self.resources.values() if r["Type"] == "AWS::ApiGatewayV2::Stage")["Properties"]
        logs = stage["AccessLogSettings"]
        self.assertEqual(logs["DestinationArn"], {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]})
        import json

        fields = json.loads(logs["Format"])
        for wanted in ["requestId", "routeKey", "status", "responseLatency"]:
            self.assertIn(wanted, fields)
        for value in fields.values():
            self.assertNotIn("$context.authorizer", value)
            self.assertNotRegex(value.lower(), "header|body|authorization")
        group = self.resources["ApiAccessLogGroup"]["Properties"]
        self.assertEqual(group["RetentionInDays"], {"Ref": "AccessLogRetentionDays"})

    def test_an_existing_table_replaces_the_created_one(self):
        template, _ = decode(TEMPLATE)
        self.assertEqual(template["Parameters"]["ExistingTableName"]["Default"], "")
        self.assertEqual(self.cfn["Conditions"]["CreateTable"], {"Fn::Equals": [{"Ref": "ExistingTableName"}, ""]})
        self.assertEqual(self.resources["Table"]["Condition"], "CreateTable")
        self.assertEqual(self.resources["Table"]["DeletionPolicy"], "Retain")
        # Every reference to the created table is the first branch of an Fn::If on CreateTable, and
        # every reference to ExistingTableName the second: walk the template, noting the branch.
        misplaced = []

        def walk(node, branch, where):
            if isinstance(node, dict):
                if set(node) == {"Fn::If"}:
                    name, yes, no = node["Fn::If"]
                    walk(yes, "created" if name == "CreateTable" else branch, where)
                    walk(no, "existing" if name == "CreateTable" else branch, where)
                    return
                if names(node, "Table") and branch != "created":
                    misplaced.append((where, node))
                if names(node, "ExistingTableName") and branch != "existing":
                    misplaced.append((where, node))
                for value in node.values():
                    walk(value, branch, where)
            elif isinstance(node, list):
                for item in node:
                    walk(item, branch, where)

        for section in ("Resources", "Outputs"):
            for name, item in self.cfn[section].items():
                if name != "Table":
                    walk(item, None, name)
        self.assertEqual(misplaced, [])
        # With a table named, the stack creates none and every function and alarm uses that one...
        stack = deployed(self.cfn, {"ExistingTableName": "keygate-restored"})
        self.assertNotIn("Table", stack["Resources"])
        self.assertEqual(references(stack, "Table"), [])
        for function in TABLE_ACTIONS:
            env = stack["Resources"][function]["Properties"]["Environment"]["Variables"]
            self.assertEqual(env["KEYGATE_TABLE"], {"Ref": "ExistingTableName"}, function)
            statements = [
                s
                for p in stack["Resources"][f"{function}Role"]["Properties"]["Policies"]
                for s in p["PolicyDocument"]["Statement"]
            ]
            for statement in statements:
                if any(a.startswith("dynamodb:") for a in statement["Action"]):
                    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                    for resource in resources:
                        self.assertTrue(resource["Fn::Sub"].startswith(EXISTING_TABLE_ARN), (function, resource))
        self.assertEqual(stack["Outputs"]["TableName"]["Value"], {"Ref": "ExistingTableName"})
        # ...and without one, the created table, as before.
        stack = deployed(self.cfn, {})
        self.assertIn("Table", stack["Resources"])
        self.assertEqual(references(stack, "ExistingTableName"), [])
        self.assertEqual(stack["Outputs"]["TableName"]["Value"], {"Ref": "Table"})

    def alarms(self):
        return {name: r["Properties"] for name, r in self.resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}

    def test_each_function_has_error_throttle_and_latency_alarms_that_notify_the_topic(self):
        alarms = self.alarms()
        for name, alarm in alarms.items():
            self.assertEqual(alarm["AlarmActions"], ALARM_ACTIONS, name)
            self.assertEqual(alarm["OKActions"], ALARM_ACTIONS, name)
            self.assertEqual(alarm["TreatMissingData"], "notBreaching", name)
        for function in TABLE_ACTIONS:
            mine = {
                a["MetricName"]: a
                for a in alarms.values()
                if a.get("Namespace") == "AWS/Lambda"
                and a["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function}}]
            }
            self.assertEqual(set(mine), {"Errors", "Throttles", "Duration"}, function)
            for metric in ("Errors", "Throttles"):
                alarm = mine[metric]
                self.assertEqual(
                    (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"], alarm["Threshold"]),
                    ("Sum", 300, 1, 1),
                    (function, metric),
                )
                self.assertEqual(alarm["ComparisonOperator"], "GreaterThanOrEqualToThreshold")
            latency = mine["Duration"]
            self.assertEqual(latency["ExtendedStatistic"], "p99")
            self.assertNotIn("Statistic", latency)
            self.assertEqual(latency["Threshold"], {"Ref": "LatencyAlarmMilliseconds"})
            self.assertEqual(latency["ComparisonOperator"], "GreaterThanThreshold")
            self.assertEqual((latency["Period"], latency["EvaluationPeriods"], latency["DatapointsToAlarm"]), (300, 3, 3))
        template, _ = decode(TEMPLATE)
        self.assertEqual(template["Parameters"]["AlarmTopicArn"]["Default"], "")
        self.assertEqual(template["Parameters"]["LatencyAlarmMilliseconds"]["Default"], 1000)
        self.assertEqual(self.cfn["Conditions"]["AlarmsNotify"], {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]}]})
        # No topic: the alarms notify no one; a topic: every alarm notifies it, firing and recovering.
        quiet = deployed(self.cfn, {})["Resources"]
        loud = deployed(self.cfn, {"AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:keygate-alarms"})["Resources"]
        for name in alarms:
            self.assertNotIn("AlarmActions", quiet[name]["Properties"], name)
            self.assertNotIn("OKActions", quiet[name]["Properties"], name)
            self.assertEqual(loud[name]["Properties"]["AlarmActions"], [{"Ref": "AlarmTopicArn"}], name)
            self.assertEqual(loud[name]["Properties"]["OKActions"], [{"Ref": "AlarmTopicArn"}], name)

    def test_the_api_and_the_table_have_alarms(self):
        alarms = self.alarms().values()
        api = [a for a in alarms if a.get("Namespace") == "AWS/ApiGateway"]
        self.assertEqual(len(api), 1)
        self.assertEqual(api[0]["MetricName"], "5xx")
        self.assertEqual(api[0]["Dimensions"], [{"Name": "ApiId", "Value": {"Ref": "Api"}}])
        self.assertEqual((api[0]["Statistic"], api[0]["Threshold"]), ("Sum", 1))
        table = {a["MetricName"]: a for a in alarms if a.get("Namespace") == "AWS/DynamoDB"}
        self.assertEqual(set(table), {"ReadThrottleEvents", "WriteThrottleEvents"})
        for alarm in table.values():
            self.assertEqual(alarm["Dimensions"], [{"Name": "TableName", "Value": TABLE_NAME}])
            self.assertEqual((alarm["Statistic"], alarm["Threshold"]), ("Sum", 1))
        # SystemErrors exist per operation only: one alarm sums the operations the store calls.
        (system,) = [a for a in alarms if "Metrics" in a]
        returned = [q for q in system["Metrics"] if q.get("ReturnData", True)]
        self.assertEqual(len(returned), 1)
        self.assertEqual(returned[0]["Expression"], "SUM(METRICS())")
        operations = set()
        for query in system["Metrics"]:
            if "MetricStat" in query:
                metric = query["MetricStat"]["Metric"]
                self.assertEqual((metric["Namespace"], metric["MetricName"]), ("AWS/DynamoDB", "SystemErrors"))
                dimensions = {d["Name"]: d["Value"] for d in metric["Dimensions"]}
                self.assertEqual(dimensions["TableName"], TABLE_NAME)
                operations.add(dimensions["Operation"])
        self.assertEqual(operations, DYNAMODB_OPERATIONS)
        # Every operation IAM allows is summed (ConditionCheckItem is sent inside TransactWriteItems).
        allowed = {a.split(":")[1] for actions in TABLE_ACTIONS.values() for a in actions}
        self.assertLessEqual(allowed - {"ConditionCheckItem"}, DYNAMODB_OPERATIONS)

    def test_the_roles_and_the_alarm_know_every_operation_the_store_calls(self):
        # The DynamoDB calls in the store's code (the SDK's snake_case builders), read from its source:
        # a new kind of call needs its IAM action in some role and its SystemErrors in the alarm.
        store = os.path.join(ROOT, "shared", "src", "store", "dynamo")
        called = set()
        for name in os.listdir(store):
            if name.endswith(".rs"):
                with open(os.path.join(store, name)) as f:
                    for call in re.findall(r"\.(get_item|batch_get_item|query|scan|put_item|update_item|delete_item|"
                                           r"batch_write_item|transact_write_items|transact_get_items|execute_statement)\(\)", f.read()):
                        called.add("".join(part.title() for part in call.split("_")))
        self.assertEqual(called, DYNAMODB_OPERATIONS)
        allowed = {a.split(":")[1] for actions in TABLE_ACTIONS.values() for a in actions}
        # A transaction needs no action of its own: each of its items needs its item's action.
        self.assertLessEqual(called - {"TransactWriteItems"}, allowed)

    def test_the_dashboard_shows_functions_api_and_table(self):
        dashboards = [r["Properties"] for r in self.resources.values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
        self.assertEqual(len(dashboards), 1)
        text, variables = dashboards[0]["DashboardBody"]["Fn::Sub"]
        self.assertEqual(variables, {"TableName": TABLE_NAME})
        # Every ${...} names a variable, a parameter, a resource or a pseudo parameter.
        names = set(variables) | set(self.cfn["Parameters"]) | set(self.resources)
        for name in re.findall(r"\$\{([^}]+)\}", text):
            self.assertTrue(name in names or name.startswith("AWS::"), name)
        # Valid JSON once the number is in (the other variables sit inside strings).
        body = json.loads(text.replace("${LatencyAlarmMilliseconds}", "1000"))
        shown = set()
        for widget in body["widgets"]:
            properties = widget["properties"]
            for metric in properties["metrics"]:
                if isinstance(metric[0], dict):
                    shown.add(("expression", metric[0]["expression"]))
                    continue
                options = metric[4] if len(metric) > 4 else {}
                shown.add((metric[0], metric[1], metric[3], options.get("stat", properties.get("stat"))))
        for function in TABLE_ACTIONS:
            for metric in ("Invocations", "Errors", "Throttles"):
                self.assertIn(("AWS/Lambda", metric, f"${{{function}}}", "Sum"), shown)
            self.assertIn(("AWS/Lambda", "Duration", f"${{{function}}}", "p99"), shown)
        for metric in ("4xx", "5xx"):
            self.assertIn(("AWS/ApiGateway", metric, "${Api}", "Sum"), shown)
        self.assertIn(("AWS/ApiGateway", "Latency", "${Api}", "p99"), shown)
        for metric in ("ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits", "ReadThrottleEvents", "WriteThrottleEvents"):
            self.assertIn(("AWS/DynamoDB", metric, "${TableName}", "Sum"), shown)
        self.assertIn("${Dashboard}", self.cfn["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"])

    def test_the_kms_key_and_reserved_concurrency_parameters_are_wired(self):
        template, _ = decode(TEMPLATE)
        self.assertEqual(template["Parameters"]["KmsKeyArn"]["Default"], "")
        self.assertEqual(self.cfn["Conditions"]["KmsKeyGiven"], {"Fn::Not": [{"Fn::Equals": [{"Ref": "KmsKeyArn"}, ""]}]})
        sse = self.resources["Table"]["Properties"]["SSESpecification"]
        self.assertEqual(
            sse, {"SSEEnabled": True, "SSEType": {"Fn::If": ["KmsKeyGiven", "KMS", NO_VALUE]}, "KMSMasterKeyId": KMS_KEY}
        )
        groups = [name for name, r in self.resources.items() if r["Type"] == "AWS::Logs::LogGroup"]
        self.assertEqual(len(groups), 5)
        for name in groups:
            self.assertEqual(self.resources[name]["Properties"].get("KmsKeyId"), KMS_KEY, name)
        for function in TABLE_ACTIONS:
            properties = self.resources[function]["Properties"]
            self.assertEqual(properties["KmsKeyArn"], KMS_KEY, function)
            kind = function.removesuffix("Function")
            parameter = template["Parameters"][f"{kind}ReservedConcurrency"]
            self.assertEqual((parameter["Type"], parameter["Default"], parameter["MinValue"]), ("Number", 0, 0))
            self.assertEqual(
                self.cfn["Conditions"][f"{kind}ConcurrencyReserved"],
                {"Fn::Not": [{"Fn::Equals": [{"Ref": f"{kind}ReservedConcurrency"}, 0]}]},
            )
            self.assertEqual(
                properties["ReservedConcurrentExecutions"],
                {"Fn::If": [f"{kind}ConcurrencyReserved", {"Ref": f"{kind}ReservedConcurrency"}, NO_VALUE]},
                function,
            )
        # The defaults: AWS's keys and unreserved functions, as before these parameters.
        stack = deployed(self.cfn, {})["Resources"]
        self.assertEqual(stack["Table"]["Properties"]["SSESpecification"], {"SSEEnabled": True})
        for name in groups:
            self.assertNotIn("KmsKeyId", stack[name]["Properties"], name)
        for function in TABLE_ACTIONS:
            self.assertNotIn("KmsKeyArn", stack[function]["Properties"], function)
            self.assertNotIn("ReservedConcurrentExecutions", stack[function]["Properties"], function)
            statements = stack[f"{function}Role"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            self.assertFalse([s for s in statements if any(a.startswith("kms:") for a in s["Action"])], function)
        # A key and reservations: all of it uses them.
        key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        given = {"KmsKeyArn": key, **{f"{f.removesuffix('Function')}ReservedConcurrency": 5 for f in TABLE_ACTIONS}}
        stack = deployed(self.cfn, given)["Resources"]
        self.assertEqual(
            stack["Table"]["Properties"]["SSESpecification"],
            {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "KmsKeyArn"}},
        )
        for name in groups:
            self.assertEqual(stack[name]["Properties"]["KmsKeyId"], {"Ref": "KmsKeyArn"}, name)
        for function in TABLE_ACTIONS:
            properties = stack[function]["Properties"]
            self.assertEqual(properties["KmsKeyArn"], {"Ref": "KmsKeyArn"}, function)
            kind = function.removesuffix("Function")
            self.assertEqual(properties["ReservedConcurrentExecutions"], {"Ref": f"{kind}ReservedConcurrency"})
            statements = stack[f"{function}Role"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            self.assertIn(KMS_STATEMENT["Fn::If"][1], statements, function)

    def test_checkov_suppressions_each_give_their_reason(self):
        template, _ = decode(TEMPLATE)
        skips = {}
        for name, resource in template["Resources"].items():
            checkov = resource.get("Metadata", {}).get("checkov")
            if checkov is None:
                continue
            for skip in checkov["skip"]:
                self.assertRegex(skip["id"], r"^CKV2?_AWS_[0-9]+$", name)
                comment = skip.get("comment", "")
                self.assertIsInstance(comment, str, name)
                self.assertGreater(len(comment.strip()), 40, f"{name} {skip['id']} needs its reason")
                skips.setdefault(name, set()).add(skip["id"])
        self.assertEqual(skips, CHECKOV_SKIPS)
        # Beside SAM's build metadata, which stays as it was.
        for function in TABLE_ACTIONS:
            metadata = template["Resources"][function]["Metadata"]
            self.assertEqual(set(metadata), {"BuildMethod", "BuildProperties", "checkov"}, function)

    def test_a_custom_domain_maps_to_the_api_when_both_parameters_are_given(self):
        template, _ = decode(TEMPLATE)
        for parameter in ("CustomDomainName", "CustomDomainCertificateArn"):
            self.assertEqual(template["Parameters"][parameter]["Default"], "")
        domain = self.resources["CustomDomain"]
        self.assertEqual(domain["Condition"], "CustomDomainGiven")
        self.assertEqual(domain["Properties"]["DomainName"], {"Ref": "CustomDomainName"})
        (config,) = domain["Properties"]["DomainNameConfigurations"]
        self.assertEqual(
            config,
            {"CertificateArn": {"Ref": "CustomDomainCertificateArn"}, "EndpointType": "REGIONAL", "SecurityPolicy": "TLS_1_2"},
        )
        mapping = self.resources["CustomDomainMapping"]
        self.assertEqual(mapping["Condition"], "CustomDomainGiven")
        stage = next(name for name, r in self.resources.items() if r["Type"] == "AWS::ApiGatewayV2::Stage")
        self.assertEqual(
            mapping["Properties"],
            {"DomainName": {"Ref": "CustomDomain"}, "ApiId": {"Ref": "Api"}, "Stage": {"Ref": stage}},
        )
        for output in ("CustomDomainTarget", "CustomDomainHostedZoneId", "CustomDomainUrl"):
            self.assertEqual(self.cfn["Outputs"][output]["Condition"], "CustomDomainGiven", output)
        self.assertEqual(self.cfn["Outputs"]["CustomDomainTarget"]["Value"], {"Fn::GetAtt": ["CustomDomain", "RegionalDomainName"]})
        # Both or neither: a rule refuses one without the other.
        self.assertIn("CustomDomainNeedsBoth", self.cfn["Rules"])
        none = deployed(self.cfn, {})
        self.assertNotIn("CustomDomain", none["Resources"])
        self.assertNotIn("CustomDomainMapping", none["Resources"])
        self.assertNotIn("CustomDomainTarget", none["Outputs"])
        given = {
            "CustomDomainName": "licenses.example.com",
            "CustomDomainCertificateArn": "arn:aws:acm:us-east-1:123456789012:certificate/1234abcd-12ab-34cd-56ef-1234567890ab",
        }
        both = deployed(self.cfn, given)
        self.assertIn("CustomDomainMapping", both["Resources"])
        self.assertIn("CustomDomainTarget", both["Outputs"])
        for only in given:
            self.assertNotIn("CustomDomain", deployed(self.cfn, {only: given[only]})["Resources"])

    def test_every_ref_names_a_parameter_resource_or_pseudo_parameter(self):
        names = set(self.cfn.get("Parameters", {})) | set(self.resources)
        refs = []

        def walk(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "Ref":
                        refs.append(value)
                    elif key == "Fn::GetAtt":
                        refs.append(value[0] if isinstance(value, list) else value.split(".")[0])
                    walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(self.cfn)
        unknown = {r for r in refs if r not in names and not r.startswith("AWS::")}
        self.assertEqual(unknown, set())


if __name__ == "__main__":
    unittest.main()
