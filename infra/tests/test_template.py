"""Structure tests for infra/template.yaml, run by `make validate`.

cfn-lint and `sam validate --lint` miss whole classes of errors (a SAM event property that only
fails in the transform, a bad !Ref), so this test runs the real SAM transform offline and checks
the CloudFormation it produces: every route of docs/openapi.yaml is served by the right function,
and each function's role allows only the actions its code performs (on the license table, its
stream and the audit log's table, which also keeps the webhooks and the expiry reminders). It also evaluates the template's conditions (`deployed`) to check
what a stack gets with and without the optional parameters.
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
    # Nothing on the license table itself: it reads the table's stream (STREAM_READERS), writes the
    # audit log and sends the webhooks (EVENTS_TABLE_GRANTS).
    "EventsFunction": set(),
}
# The functions behind the API (the events function is given stream batches and schedule ticks, not requests).
API_FUNCTIONS = [f for f in TABLE_ACTIONS if f != "EventsFunction"]
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


# The license table's stream: the created table's, or (ExistingTableName) only that table's streams.
STREAM_ARN = {"Fn::If": ["CreateTable", {"Fn::GetAtt": ["Table", "StreamArn"]}, {"Fn::Sub": f"{EXISTING_TABLE_ARN}/stream/*"}]}
# What Lambda's poller reads on the events function's behalf (and nothing that reads the table).
STREAM_READ_ACTIONS = {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"}
STREAM_READERS = {"EventsFunction"}
# The audit log: a table of its own (the stack's, also with ExistingTableName), written by the events
# function alone and read by the issue function alone (the vendor's event listings). It also keeps the
# webhooks (hooks.rs) in partitions of their own, `H#...` (an event's partition is its license key,
# which never has a `#`): the endpoints the issue function manages, the deliveries the events
# function makes and sends; and the `license.expiring` reminders (reminders.rs), one partition per
# day they are due, `X#<date>`, which the events function alone writes, reads and deletes.
EVENTS_TABLE_ARN = {"Fn::GetAtt": ["EventsTable", "Arn"]}


def events_index_arn(index):
    return {"Fn::Sub": f"${{EventsTable.Arn}}/index/{index}"}


EVENTS_DAY_INDEX_ARN = events_index_arn("ByDay")
EVENTS_DUE_INDEX_ARN = events_index_arn("ByDue")


def leading_keys(*patterns):
    """An IAM condition keeping an action to the partitions whose key matches one of `patterns`."""
    return {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": list(patterns)}}


# An IAM condition keeping an action to the webhooks' partitions: never an event.
WEBHOOK_PARTITIONS = leading_keys("H#*")
# To the reminders' partitions: never an event, never a webhook item.
REMINDER_PARTITIONS = leading_keys("X#*")
# To either: never an event.
WEBHOOK_AND_REMINDER_PARTITIONS = leading_keys("H#*", "X#*")
# Each function's grants on the audit log's table: (action, on the "table" or an "index/<name>") ->
# the condition it comes with (None: anywhere in it).
EVENTS_TABLE_GRANTS = {
    "EventsFunction": {
        ("dynamodb:BatchWriteItem", "table"): None,  # events, 25 puts a call (audit.rs put_events)
        # Deliveries made and attempted (enqueue, save_delivery); reminders written (move_reminders).
        ("dynamodb:PutItem", "table"): WEBHOOK_AND_REMINDER_PARTITIONS,
        # The endpoints, to deliver to (endpoints); a day's reminders due (remind_due).
        ("dynamodb:Query", "table"): WEBHOOK_AND_REMINDER_PARTITIONS,
        # A reminder moved with its license's end, or sent (move_reminders, remind_due).
        ("dynamodb:DeleteItem", "table"): REMINDER_PARTITIONS,
        ("dynamodb:Query", "index/ByDue"): None,  # the deliveries due (due_deliveries)
    },
    "IssueFunction": {
        # A license's events (audit.rs query_events); the endpoints, an endpoint's deliveries (hooks.rs).
        ("dynamodb:Query", "table"): None,
        ("dynamodb:Query", "index/ByDay"): None,  # a day's events (query_events)
        ("dynamodb:GetItem", "table"): WEBHOOK_PARTITIONS,  # an endpoint (endpoint)
        ("dynamodb:PutItem", "table"): WEBHOOK_PARTITIONS,  # an endpoint saved, failed deliveries replayed
        ("dynamodb:DeleteItem", "table"): WEBHOOK_PARTITIONS,  # an endpoint deleted (delete_endpoint)
    },
}
# Where the stream mapping sends a batch it gave up on.
FAILURE_QUEUE_ARN = {"Fn::GetAtt": ["EventsFailureQueue", "Arn"]}
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
# With KmsKeyArn the failure queue uses the key too: the events function's role may send to it.
QUEUE_KMS_STATEMENT = {
    "Fn::If": [
        "KmsKeyGiven",
        {
            "Sid": "FailureQueueKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": {"Ref": "KmsKeyArn"},
            "Condition": {"StringEquals": {"kms:ViaService": [{"Fn::Sub": "sqs.${AWS::Region}.amazonaws.com"}]}},
        },
        NO_VALUE,
    ]
}
# The DynamoDB API operations the store calls on the license table (ConditionCheckItem only inside TransactWriteItems):
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
# The code that calls the audit log's table, and no other table, with the partitions it keeps to: the
# audit log's (audit.rs, events' partitions: None), the webhooks' (hooks.rs, only `H#` partitions)
# and the expiry reminders' (reminders.rs, only `X#` partitions)...
EVENTS_TABLE_SOURCES = {"audit.rs": None, "hooks.rs": "H#*", "reminders.rs": "X#*"}
# ...and the methods of it each function calls; what those call in turn is read from the source.
EVENTS_TABLE_ENTRY_POINTS = {
    # A stream batch (stream.rs `record`): its events, then their deliveries, then the reminders of
    # the licenses whose end moved; after each batch and on each schedule tick (lambda.rs
    # `deliver_webhooks`), the deliveries due; on each tick (lambda.rs `follow_stream`), the
    # reminders due (which record their events and deliveries).
    "EventsFunction": {"put_events", "enqueue_events", "deliver_due", "move_reminders", "remind_due"},
    # GET /v1/events and a license's events; the webhook routes (api/hooks.rs).
    "IssueFunction": {
        "query_events",
        "endpoints",
        "endpoint",
        "put_endpoint",
        "delete_endpoint",
        "deliveries",
        "replay_failed",
    },
}
# The DynamoDB Streams calls of the local stream follower (stream.rs, `keygate serve`): the same reads
# Lambda's poller makes with the events function's role in AWS.
STREAM_OPERATIONS = {"DescribeStream", "GetShardIterator", "GetRecords"}
ALARM_ACTIONS = {"Fn::If": ["AlarmsNotify", [{"Ref": "AlarmTopicArn"}], NO_VALUE]}
# checkov findings the template suppresses (Metadata: checkov: skip), by resource; every other check passes.
CHECKOV_SKIPS = {function: {"CKV_AWS_116", "CKV_AWS_117"} for function in TABLE_ACTIONS}
ROUTE_OWNERS = {
    "/v1/licenses": "IssueFunction",
    "/v1/licenses/{license_key}": "IssueFunction",
    "/v1/licenses/{license_key}/devices/{hardware_id}": "IssueFunction",
    "/v1/licenses/{license_key}/events": "IssueFunction",
    "/v1/events": "IssueFunction",
    "/v1/webhooks": "IssueFunction",
    "/v1/webhooks/{webhook_id}": "IssueFunction",
    "/v1/webhooks/{webhook_id}/secret": "IssueFunction",
    "/v1/webhooks/{webhook_id}/deliveries": "IssueFunction",
    "/v1/webhooks/{webhook_id}/replay": "IssueFunction",
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


# The DynamoDB calls of the store's code (the SDK's snake_case builders), as `operation` names them.
DYNAMODB_CALLS = (
    r"\.(get_item|batch_get_item|query|scan|put_item|update_item|delete_item|batch_write_item"
    r"|transact_write_items|transact_get_items|execute_statement)\(\)"
)


def operation(call):
    """The API operation of an SDK builder: batch_write_item -> BatchWriteItem."""
    return "".join(part.title() for part in call.split("_"))


def rust_fns(text):
    """Each `fn` of a Rust file (free or method) -> its text, up to the next `fn` (the files read here
    nest none)."""
    starts = list(re.finditer(r"^[ \t]*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?fn\s+(\w+)", text, re.M))
    fns = {}
    for i, start in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        assert start.group(1) not in fns, f"fn {start.group(1)} twice"
        fns[start.group(1)] = text[start.start() : end]
    return fns


def events_table_calls(body, indexes):
    """The grants one fn's calls need on the audit log's table: (action, "table" or "index/<name>").
    A Query statement that names an index is of that index only; `indexes` maps the constants that
    name them to the names."""
    needed = set()
    for call in re.finditer(DYNAMODB_CALLS, body):
        action = f"dynamodb:{operation(call.group(1))}"
        statement = body[call.start() : body.find(";", call.start())]
        if action != "dynamodb:Query" or ".index_name(" not in statement:
            needed.add((action, "table"))
    if "dynamodb:Query" in {action for action, _ in needed} or ".query()" in body:
        # An index named anywhere in a fn that queries (query_events picks one in a match arm).
        for constant in re.findall(r"\.index_name\(\s*(?:\w+::)*(\w+)\s*\)", body):
            needed.add(("dynamodb:Query", f"index/{indexes[constant]}"))
    return needed


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

    def events_table_grants(self, function):
        """The role's grants on the audit log's table: (action, "table" or "index/<name>") -> the
        statement's condition (None: none), each granted once."""
        statements, _ = self.policy_statements(function)
        grants = {}
        for statement in statements:
            if not references(statement, "EventsTable"):
                continue
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for resource in resources:
                if resource == EVENTS_TABLE_ARN:
                    where = "table"
                else:
                    sub = resource.get("Fn::Sub") if isinstance(resource, dict) else None
                    index = re.fullmatch(r"\$\{EventsTable\.Arn\}/index/(\w+)", sub) if isinstance(sub, str) else None
                    self.assertIsNotNone(index, (function, resource))
                    where = f"index/{index.group(1)}"
                for action in statement["Action"]:
                    self.assertNotIn((action, where), grants, f"{function}: {action} on {where} twice")
                    grants[(action, where)] = statement.get("Condition")
        return grants

    def test_each_function_may_do_only_what_its_code_does(self):
        for function, expected in TABLE_ACTIONS.items():
            statements, managed = self.policy_statements(function, conditional=True)
            table_actions, index_actions, stream_actions, ssm, sqs, kms = set(), set(), set(), [], [], []
            for statement in statements:
                if "Fn::If" in statement:
                    kms.append(statement)
                    continue
                self.assertEqual(statement["Effect"], "Allow")
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                resource = statement["Resource"]
                resources = resource if isinstance(resource, list) else [resource]
                if all(a.startswith("dynamodb:") for a in actions):
                    if resource == TABLE_ARN:
                        table_actions.update(actions)
                    elif resource == STREAM_ARN:
                        stream_actions.update(actions)
                    elif references(resources, "EventsTable"):
                        continue  # below, as events_table_grants reads them
                    else:
                        self.assertEqual(resources, INDEXES.get(function), function)
                        index_actions.update(actions)
                elif actions == ["ssm:GetParameter"]:
                    ssm.append(resource)
                elif actions == ["sqs:SendMessage"]:
                    sqs.append(resource)
                else:
                    self.fail(f"{function} has an unexpected statement {statement}")
            self.assertEqual(table_actions, expected, function)
            # The vendor API queries the lookup indexes; activate only the rotation candidates.
            self.assertEqual(index_actions, {"dynamodb:Query"} if function in INDEXES else set(), function)
            # Only the events function reads the stream, and the audit log's table is its and issue's alone.
            self.assertEqual(stream_actions, STREAM_READ_ACTIONS if function in STREAM_READERS else set(), function)
            self.assertEqual(self.events_table_grants(function), EVENTS_TABLE_GRANTS.get(function, {}), function)
            # Only the events function's stream mapping sends to the failure queue.
            self.assertEqual(sqs, [FAILURE_QUEUE_ARN] if function in STREAM_READERS else [], function)
            # Only functions that sign read the signing key, and only that one parameter.
            expected_ssm = [
                {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${SigningKeyParameterName}"}
            ]
            self.assertEqual(ssm, expected_ssm if function in SIGNS_TOKENS else [], function)
            # The customer-managed key, only when one is given (and the failure queue's use of it).
            expected_kms = [KMS_STATEMENT, QUEUE_KMS_STATEMENT] if function in STREAM_READERS else [KMS_STATEMENT]
            self.assertEqual(kms, expected_kms, function)
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

    def test_nothing_deletes_a_license_a_device_or_an_event(self):
        # The two DeleteItems are on the audit log's table, and neither can reach an event: the issue
        # function's, of webhook endpoints, in the webhooks' partitions only; the events function's,
        # of expiry reminders, in the reminders' partitions only.
        deletes = []
        for function in TABLE_ACTIONS:
            statements, _ = self.policy_statements(function)
            for statement in statements:
                if "dynamodb:DeleteItem" in statement["Action"]:
                    deletes.append((function, statement["Resource"], statement.get("Condition")))
        self.assertEqual(
            deletes,
            [
                ("IssueFunction", EVENTS_TABLE_ARN, WEBHOOK_PARTITIONS),
                ("EventsFunction", EVENTS_TABLE_ARN, REMINDER_PARTITIONS),
            ],
        )
        # Only the events function may delete a reminder (and it nothing else); the issue function's
        # delete stays in the webhooks' partitions.
        reminders = [f for f, _, condition in deletes if "X#*" in condition["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]]
        self.assertEqual(reminders, ["EventsFunction"])

    def test_activate_cannot_delete(self):
        statements, _ = self.policy_statements("ActivateFunction")
        for statement in statements:
            self.assertNotIn("dynamodb:DeleteItem", statement["Action"])

    def test_the_events_function_reads_only_the_stream_and_never_reads_an_event(self):
        statements, managed = self.policy_statements("EventsFunction")
        role = self.resources["EventsFunctionRole"]
        # The license table only through its stream: no reference to the table but its StreamArn.
        self.assertEqual(references(role, "Table"), [{"Fn::GetAtt": ["Table", "StreamArn"]}])
        self.assertEqual(references(role, "ExistingTableName"), [STREAM_ARN["Fn::If"][2]])
        for statement in statements:
            actions = set(statement["Action"])
            if actions & STREAM_READ_ACTIONS:
                # Stream reads, on the stream's ARN only.
                self.assertLessEqual(actions, STREAM_READ_ACTIONS)
                self.assertEqual(statement["Resource"], STREAM_ARN)
            elif not references(statement, "EventsTable"):
                self.assertFalse({a for a in actions if a.startswith("dynamodb:")}, statement)
        # On the audit log's table: events written in batches only; every other write and every read
        # in the webhooks' or the reminders' partitions, or of the deliveries due; a delete only in the
        # reminders' partitions. Never an event read (not ByDay), and no GetItem, Scan or UpdateItem
        # anywhere.
        grants = self.events_table_grants("EventsFunction")
        self.assertEqual(grants, EVENTS_TABLE_GRANTS["EventsFunction"])
        for (action, where), condition in grants.items():
            if action == "dynamodb:DeleteItem":
                self.assertEqual((where, condition), ("table", REMINDER_PARTITIONS))
            elif action != "dynamodb:BatchWriteItem" and where == "table":
                self.assertEqual(condition, WEBHOOK_AND_REMINDER_PARTITIONS, action)
            self.assertIn(where, {"table", "index/ByDue"}, action)
            self.assertNotIn(action, {"dynamodb:GetItem", "dynamodb:Scan", "dynamodb:UpdateItem"})
        self.assertEqual(
            [s["Resource"] for s in statements if references(s, "EventsTable") and "Condition" not in s],
            [EVENTS_TABLE_ARN, EVENTS_DUE_INDEX_ARN],
        )
        # Not SAM's AWSLambdaDynamoDBExecutionRole (every stream in the account): logs only.
        self.assertEqual(managed, ["arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"])
        # Its table names: the license table's (the global) and the audit log's; and the retention.
        env = self.resources["EventsFunction"]["Properties"]["Environment"]["Variables"]
        self.assertEqual(env["KEYGATE_TABLE"], TABLE_NAME)
        self.assertEqual(env["KEYGATE_EVENTS_TABLE"], {"Ref": "EventsTable"})
        self.assertEqual(env["KEYGATE_EVENT_RETENTION_DAYS"], {"Ref": "EventRetentionDays"})
        self.assertEqual(env["KEYGATE_EXPIRY_REMINDER_DAYS"], {"Ref": "ExpiryReminderDays"})
        self.assertNotIn("KEYGATE_SIGNING_KEY_PARAMETER", env)
        self.assertNotIn("KEYGATE_ADMIN_TOKEN_SHA256", env)
        # Webhooks go to public addresses only: never the setting that lifts that (make local's).
        self.assertNotIn("KEYGATE_WEBHOOK_ALLOW_PRIVATE", self.source)
        # Not behind the API: its stream mapping and its schedule (below) invoke it, nothing else.
        template, _ = decode(TEMPLATE)
        events = template["Resources"]["EventsFunction"]["Properties"]["Events"]
        self.assertEqual({name: e["Type"] for name, e in events.items()}, {"DeliverWebhooks": "Schedule"})
        permissions = [r["Properties"] for r in self.resources.values() if r["Type"] == "AWS::Lambda::Permission"]
        self.assertEqual([p["Principal"] for p in permissions if references(p, "EventsFunction")], ["events.amazonaws.com"])

    def test_a_schedule_sends_the_webhook_deliveries_due_every_minute(self):
        rules = {name: r["Properties"] for name, r in self.resources.items() if r["Type"] == "AWS::Events::Rule"}
        ((name, rule),) = rules.items()
        self.assertEqual(rule["ScheduleExpression"], "rate(1 minute)")
        self.assertEqual(rule["State"], "ENABLED")
        self.assertIn("webhook deliveries that have come due (retries of failed attempts, and replays)", rule["Description"])
        self.assertNotIn("EventPattern", rule)
        # The events function, given the rule's own event: it has no `Records`, which the function
        # takes for the tick (lambda.rs follow_stream).
        (target,) = rule["Targets"]
        self.assertEqual(target["Arn"], {"Fn::GetAtt": ["EventsFunction", "Arn"]})
        self.assertEqual(set(target), {"Arn", "Id"})
        with open(os.path.join(ROOT, "shared", "src", "lambda.rs")) as f:
            self.assertIn('event.payload.get("Records").is_none()', rust_fns(f.read())["follow_stream"])
        # Allowed to invoke that function only, from that rule only; no role for the schedule (an
        # EventBridge Scheduler schedule would need one): the stack's roles are the functions'.
        permissions = [r["Properties"] for r in self.resources.values() if r["Type"] == "AWS::Lambda::Permission"]
        self.assertIn(
            {
                "Action": "lambda:InvokeFunction",
                "FunctionName": {"Ref": "EventsFunction"},
                "Principal": "events.amazonaws.com",
                "SourceArn": {"Fn::GetAtt": [name, "Arn"]},
            },
            permissions,
        )
        self.assertEqual(
            [p for p in permissions if p["Principal"] != "apigateway.amazonaws.com"],
            [p for p in permissions if references(p, name)],
        )
        roles = {n for n, r in self.resources.items() if r["Type"] == "AWS::IAM::Role"}
        self.assertEqual(roles, {f"{function}Role" for function in TABLE_ACTIONS})
        self.assertFalse([r for r in self.resources.values() if r["Type"].startswith("AWS::Scheduler::")])
        # A tick is the function's only asynchronous invocation: one that failed or waited a minute
        # is dropped, not retried (the next tick does its work); no destination.
        configs = [r["Properties"] for r in self.resources.values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
        for config in configs:
            self.assertEqual(config.pop("DestinationConfig", {}), {})  # (SAM writes an empty one)
        self.assertEqual(
            configs,
            [
                {
                    "FunctionName": {"Ref": "EventsFunction"},
                    "Qualifier": "$LATEST",
                    "MaximumEventAgeInSeconds": 60,
                    "MaximumRetryAttempts": 0,
                }
            ],
        )
        # Room for a batch's writes (30 s, as before webhooks) and a round of deliveries after it:
        # rounds start within 20 s (lambda.rs), each attempt waits at most 5 s (config.rs).
        with open(os.path.join(ROOT, "shared", "src", "lambda.rs")) as f:
            rounds = re.search(r"from_secs\((\d+)\)", rust_fns(f.read())["deliver_webhooks"])
        with open(os.path.join(ROOT, "shared", "src", "config.rs")) as f:
            attempt = re.search(r"webhooks: crate::webhooks::deliver::Policy \{[^}]*timeout: std::time::Duration::from_secs\((\d+)\)", f.read())
        timeout = self.resources["EventsFunction"]["Properties"]["Timeout"]
        self.assertGreaterEqual(timeout, 30 + int(rounds.group(1)) + int(attempt.group(1)))

    def test_the_issue_function_reads_the_audit_log_and_writes_only_webhook_endpoints(self):
        statements, _ = self.policy_statements("IssueFunction")
        grants = self.events_table_grants("IssueFunction")
        self.assertEqual(grants, EVENTS_TABLE_GRANTS["IssueFunction"])
        # Events are read only (Query of the table and ByDay); every write, and a GetItem, only in the
        # webhooks' partitions: it can neither write nor delete an event. No batch write, and never
        # the deliveries due (the events function sends them).
        for (action, where), condition in grants.items():
            if action != "dynamodb:Query":
                self.assertEqual((where, condition), ("table", WEBHOOK_PARTITIONS), action)
        self.assertNotIn(("dynamodb:BatchWriteItem", "table"), grants)
        self.assertNotIn("index/ByDue", {where for _, where in grants})
        # Nor a reminder: no grant of it names their partitions (the events function's alone).
        self.assertFalse([g for g, c in grants.items() if c and "X#*" in c["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]])
        (read,) = [s for s in statements if references(s, "EventsTable") and "Condition" not in s]
        self.assertEqual((read["Action"], read["Resource"]), (["dynamodb:Query"], [EVENTS_TABLE_ARN, EVENTS_DAY_INDEX_ARN]))
        env = self.resources["IssueFunction"]["Properties"]["Environment"]["Variables"]
        self.assertEqual(env["KEYGATE_EVENTS_TABLE"], {"Ref": "EventsTable"})

    def test_the_webhooks_partitions_hold_no_event(self):
        # WEBHOOK_PARTITIONS (`H#*`) keeps writes off the events only while every webhook item's
        # partition starts with `H#` (hooks.rs) and no event's does: an event's is its license key,
        # letters, digits and dashes (input.rs).
        with open(os.path.join(ROOT, "shared", "src", "store", "dynamo", "hooks.rs")) as f:
            hooks = f.read()
        self.assertIn('const ENDPOINTS_PK: &str = "H#endpoints";', hooks)
        keys = re.findall(r'(?:"PK"(?:\.to_string\(\))?|":pk"),\s*s\(&?(\w+!?\("[^"]*"|\w+)', hooks)
        self.assertTrue(keys)
        for key in keys:
            if key == "pk":
                self.assertTrue(all(v.startswith('"H#') for v in re.findall(r"let pk = format!\((\"[^\"]*\")", hooks)))
            else:
                self.assertTrue(key == "ENDPOINTS_PK" or key.startswith('format!("H#'), key)
        with open(os.path.join(ROOT, "shared", "src", "store", "dynamo", "audit.rs")) as f:
            self.assertIn('("PK".to_string(), s(event.license_key.as_str()))', f.read())
        with open(os.path.join(ROOT, "shared", "src", "input.rs")) as f:
            self.assertIn("c.is_ascii_alphanumeric() || c == '-'", f.read())

    def test_the_reminders_partitions_hold_no_event_and_no_webhook(self):
        # REMINDER_PARTITIONS (`X#*`) keeps the events function's deletes off the events and the
        # webhooks only while every key reminders.rs builds starts with `X#` (the webhooks' start with
        # `H#`, an event's is a license key, which has no `#`: the test above).
        with open(os.path.join(ROOT, "shared", "src", "store", "dynamo", "reminders.rs")) as f:
            reminders = f.read()
        fns = rust_fns(reminders)
        # A reminder's key is made in one place, in an `X#` partition...
        self.assertRegex(fns["reminder_key"], r'\(format!\("X#\{\}", ')
        key = r'(?:"PK"(?:\.to_string\(\))?|":pk"),\s*s\(&?(format!\("[^"]*"|\w+\("[^"]*"\)|\w+)'
        self.assertEqual(re.findall(key, reminders), [k for body in fns.values() for k in re.findall(key, body)])
        for name, body in fns.items():
            keys = re.findall(key, body)
            # ...each call of the table names its partition once...
            self.assertEqual(len(keys), len(re.findall(DYNAMODB_CALLS, body)), name)
            for k in keys:
                if k == "pk":
                    # ...one reminder_key made (nothing else binds `pk`)...
                    bindings = re.findall(r"let (?:mut )?\(?[\w\s,]*\bpk\b[^=]*=\s*(\w+)", body)
                    self.assertEqual(set(bindings), {"reminder_key"}, name)
                elif k == 'text("PK")':
                    # ...the partition of an item the fn's one query returned, an `X#` one...
                    self.assertEqual(len(re.findall(r"\.query\(\)", body)), 1, name)
                    self.assertEqual(re.findall(r'":pk",\s*s\(&?(format!\("[^"]*")', body), ['format!("X#{}"'], name)
                else:
                    # ...or an `X#` one made in place.
                    self.assertTrue(k.startswith('format!("X#'), (name, k))
        # A reminder has none of the indexes' keys, so it is in neither ByDay (an event listing, the
        # issue function's) nor ByDue (the deliveries due); it has `ttl`, so TTL deletes one never sent.
        attributes = set(re.findall(r'\("(\w+)"\.to_string\(\),', fns["move_reminders"]))
        self.assertLessEqual({"PK", "SK", "ttl"}, attributes)
        table = self.resources["EventsTable"]["Properties"]
        index_keys = {k["AttributeName"] for i in table["GlobalSecondaryIndexes"] for k in i["KeySchema"]} - {"PK", "SK"}
        self.assertEqual(index_keys, {"day", "due", "next_at"})
        self.assertFalse(attributes & index_keys, attributes)
        self.assertEqual(table["TimeToLiveSpecification"]["AttributeName"], "ttl")

    def test_no_other_function_touches_the_audit_log_the_stream_or_the_failure_queue(self):
        # No role but the events and issue functions' names the audit log's table (nor does any
        # other IAM resource the transform makes).
        for name, resource in self.resources.items():
            if resource["Type"].startswith("AWS::IAM::") and name not in {f"{f}Role" for f in EVENTS_TABLE_GRANTS}:
                self.assertEqual(references(resource, "EventsTable"), [], name)
        for function in TABLE_ACTIONS:
            if function in EVENTS_TABLE_GRANTS:
                continue
            for name in (function, f"{function}Role"):
                self.assertEqual(references(self.resources[name], "EventsTable"), [], name)
                self.assertEqual(references(self.resources[name], "EventsFailureQueue"), [], name)
            statements, _ = self.policy_statements(function)
            for statement in statements:
                self.assertFalse(set(statement["Action"]) & STREAM_READ_ACTIONS, function)
                self.assertNotEqual(statement["Resource"], STREAM_ARN, function)

    def test_the_stream_mapping_reports_partial_failures_bisects_and_gives_up_to_a_queue(self):
        mappings = {n: r["Properties"] for n, r in self.resources.items() if r["Type"] == "AWS::Lambda::EventSourceMapping"}
        self.assertEqual(set(mappings), {"EventsStreamMapping"})
        mapping = mappings["EventsStreamMapping"]
        self.assertEqual(mapping["FunctionName"], {"Ref": "EventsFunction"})
        self.assertEqual(
            mapping["EventSourceArn"],
            {
                "Fn::If": [
                    "CreateTable",
                    {"Fn::GetAtt": ["Table", "StreamArn"]},
                    {"Fn::If": ["ExistingTableStreamGiven", {"Ref": "ExistingTableStreamArn"}, NO_VALUE]},
                ]
            },
        )
        # The function answers with batchItemFailures: without this Lambda would take any answer as
        # success, and lose the records it names.
        self.assertEqual(mapping["FunctionResponseTypes"], ["ReportBatchItemFailures"])
        self.assertIs(mapping["BisectBatchOnFunctionError"], True)
        # Bounded: a record that keeps failing cannot hold its shard for the stream's whole 24 hours
        # (-1, the default, is forever).
        self.assertTrue(0 <= mapping["MaximumRetryAttempts"] <= 10, mapping["MaximumRetryAttempts"])
        self.assertTrue(60 <= mapping["MaximumRecordAgeInSeconds"] <= 86400, mapping["MaximumRecordAgeInSeconds"])
        self.assertEqual(mapping["DestinationConfig"], {"OnFailure": {"Destination": FAILURE_QUEUE_ARN}})
        # Every record from the oldest the stream keeps, one shard's records in order, in batches.
        self.assertEqual(mapping["StartingPosition"], "TRIM_HORIZON")
        self.assertEqual(mapping.get("ParallelizationFactor", 1), 1)
        self.assertEqual((mapping["BatchSize"], mapping["MaximumBatchingWindowInSeconds"]), (100, 1))
        self.assertNotEqual(mapping.get("Enabled"), False)
        # The queue keeps what it is given as long as SQS can (14 days), encrypted.
        queue = self.resources["EventsFailureQueue"]["Properties"]
        self.assertEqual(queue["MessageRetentionPeriod"], 1209600)
        self.assertEqual(queue["KmsMasterKeyId"], KMS_KEY)
        self.assertEqual(queue["SqsManagedSseEnabled"], {"Fn::If": ["KmsKeyGiven", NO_VALUE, True]})
        # A mapping sends with the function's role: it may (and only it may, above).
        statements, _ = self.policy_statements("EventsFunction")
        sends = [s for s in statements if any(a.startswith("sqs:") for a in s["Action"])]
        self.assertEqual(sends, [{"Sid": "FailureQueue", "Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": FAILURE_QUEUE_ARN}])

    def test_the_audit_log_table_matches_the_store(self):
        # As shared/src/store/dynamo/audit.rs creates it (create_events_table) and queries it.
        events = self.resources["EventsTable"]
        # The stack's own whatever the license table, kept when the stack goes or replaces it.
        self.assertNotIn("Condition", events)
        self.assertEqual((events["DeletionPolicy"], events["UpdateReplacePolicy"]), ("Retain", "Retain"))
        table = events["Properties"]
        self.assertEqual(table["BillingMode"], "PAY_PER_REQUEST")
        self.assertEqual(
            table["KeySchema"], [{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}]
        )
        definitions = {d["AttributeName"]: d["AttributeType"] for d in table["AttributeDefinitions"]}
        self.assertEqual(definitions, {"PK": "S", "SK": "S", "day": "S", "due": "S", "next_at": "S"})
        # A day's events (GET /v1/events), and the webhook deliveries due (sparse: only a pending
        # delivery has `due`), the soonest first; both with every attribute.
        indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
        self.assertEqual(
            {name: [(k["AttributeName"], k["KeyType"]) for k in i["KeySchema"]] for name, i in indexes.items()},
            {"ByDay": [("day", "HASH"), ("SK", "RANGE")], "ByDue": [("due", "HASH"), ("next_at", "RANGE")]},
        )
        for index in indexes.values():
            self.assertEqual(index["Projection"], {"ProjectionType": "ALL"}, index["IndexName"])
        dynamo = os.path.join(ROOT, "shared", "src", "store", "dynamo")
        with open(os.path.join(dynamo, "audit.rs")) as f:
            audit = f.read()
        with open(os.path.join(dynamo, "hooks.rs")) as f:
            hooks = f.read()
        self.assertIn('DAY_INDEX: &str = "ByDay"', audit)
        self.assertIn('DUE_INDEX: &str = "ByDue"', hooks)
        # As create_events_table makes it (`make local`, the tests): the same attributes and indexes.
        create = rust_fns(audit)["create_events_table"]
        self.assertEqual(set(re.findall(r'attribute\("(\w+)"\)', create)), set(definitions))
        constants = dict(re.findall(r'const (\w+): &str = "([^"]*)"', audit + hooks))
        # Each index given to the table: `index(NAME, "partition", "sort", ProjectionType::…)`.
        given = re.findall(r"\.global_secondary_indexes\(", create)
        built = re.findall(r'index\((?:\w+::)*(\w+), "(\w+)", "(\w+)", ProjectionType::(\w+)\)', create)
        self.assertEqual(len(built), len(given))
        created = {}
        for constant, partition, sort, projection in built:
            created[constants[constant]] = [(partition, "HASH"), (sort, "RANGE")]
            self.assertEqual(projection, "All", constants[constant])
        self.assertEqual(
            created, {name: [(k["AttributeName"], k["KeyType"]) for k in i["KeySchema"]] for name, i in indexes.items()}
        )
        # EventRetentionDays sets `ttl` on each event; DynamoDB deletes it after that.
        self.assertEqual(table["TimeToLiveSpecification"], {"AttributeName": "ttl", "Enabled": True})
        self.assertTrue(table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"])
        self.assertEqual(table["DeletionProtectionEnabled"], {"Ref": "TableDeletionProtection"})
        self.assertEqual(table["SSESpecification"], self.resources["Table"]["Properties"]["SSESpecification"])
        # Nothing reads a stream of it.
        self.assertNotIn("StreamSpecification", table)

    def test_event_retention_is_kept_for_good_unless_given_days_the_code_accepts(self):
        template, _ = decode(TEMPLATE)
        parameter = template["Parameters"]["EventRetentionDays"]
        self.assertEqual((parameter["Type"], parameter["Default"]), ("String", ""))
        pattern = re.compile(parameter["AllowedPattern"])
        # shared/src/config.rs: 1 to 36500 days, and an empty value is unset (kept for good).
        for good in ["", "1", "7", "90", "365", "3650", "9999", "10000", "29999", "35999", "36499", "36500"]:
            self.assertTrue(pattern.fullmatch(good), good)
        for bad in ["0", "007", "-3", "ninety", "36501", "36600", "40000", "100000", " 90", "1.5"]:
            self.assertFalse(pattern.fullmatch(bad), bad)

    def test_expiry_reminders_are_off_unless_given_days_the_code_accepts(self):
        template, _ = decode(TEMPLATE)
        parameter = template["Parameters"]["ExpiryReminderDays"]
        self.assertEqual((parameter["Type"], parameter["Default"]), ("String", ""))
        pattern = re.compile(parameter["AllowedPattern"])
        # shared/src/config.rs: comma-separated days from 1 to 365; an empty value is unset (none).
        with open(os.path.join(ROOT, "shared", "src", "config.rs")) as f:
            config = f.read()
        self.assertIn('EXPIRY_REMINDER_DAYS: &str = "KEYGATE_EXPIRY_REMINDER_DAYS"', config)
        self.assertIn(".filter(|d| (1..=365).contains(d))", config)
        self.assertIn(".filter(|v| !v.trim().is_empty())", config)
        for n in range(0, 1001):
            self.assertEqual(bool(pattern.fullmatch(str(n))), 1 <= n <= 365, n)
        for good in ["", "14,3", "3,14", "30,7,1", "365,1", "1,1", "100,200,300,365"]:
            self.assertTrue(pattern.fullmatch(good), good)
        for bad in ["0", "07", "366", "14,", ",3", "14,,3", "14,0", "14,366", "14, 3", " 14", "14;3", "a", "-3", "1.5"]:
            self.assertFalse(pattern.fullmatch(bad), bad)
        # The events function's alone: it writes and sends the reminders.
        for name, resource in self.resources.items():
            if resource["Type"] == "AWS::Lambda::Function":
                env = resource["Properties"]["Environment"]["Variables"]
                expected = {"Ref": "ExpiryReminderDays"} if name == "EventsFunction" else None
                self.assertEqual(env.get("KEYGATE_EXPIRY_REMINDER_DAYS"), expected, name)
        self.assertEqual(references(self.resources, "ExpiryReminderDays"), [{"Ref": "ExpiryReminderDays"}])

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
                # (The audit log is the stack's own table either way.)
                if any(a.startswith("dynamodb:") for a in statement["Action"]) and not references(statement, "EventsTable"):
                    resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
                    for resource in resources:
                        self.assertTrue(resource["Fn::Sub"].startswith(EXISTING_TABLE_ARN), (function, resource))
        self.assertEqual(stack["Outputs"]["TableName"]["Value"], {"Ref": "ExistingTableName"})
        # ...and without one, the created table, as before.
        stack = deployed(self.cfn, {})
        self.assertIn("Table", stack["Resources"])
        self.assertEqual(references(stack, "ExistingTableName"), [])
        self.assertEqual(stack["Outputs"]["TableName"]["Value"], {"Ref": "Table"})

    def test_an_existing_table_comes_with_its_stream_and_keeps_the_audit_log(self):
        template, _ = decode(TEMPLATE)
        parameter = template["Parameters"]["ExistingTableStreamArn"]
        self.assertEqual(parameter["Default"], "")
        pattern = re.compile(parameter["AllowedPattern"])
        arn = "arn:aws:dynamodb:us-east-1:123456789012:table/keygate-restored/stream/2026-11-25T10:20:30.123"
        for good in ["", arn, arn.replace("arn:aws:", "arn:aws-cn:")]:
            self.assertTrue(pattern.fullmatch(good), good)
        for bad in [arn.replace("/stream/", "/index/"), "arn:aws:dynamodb:us-east-1:123456789012:table/keygate-restored", arn + "/x"]:
            self.assertFalse(pattern.fullmatch(bad), bad)
        # Both or neither: the rule's assertion, evaluated like a condition.
        (rule,) = self.cfn["Rules"]["ExistingTableNeedsItsStream"]["Assertions"]

        def allowed(parameters):
            return condition_values({"Parameters": self.cfn["Parameters"], "Conditions": {"ok": rule["Assert"]}}, parameters)["ok"]

        self.assertTrue(allowed({}))
        self.assertTrue(allowed({"ExistingTableName": "keygate-restored", "ExistingTableStreamArn": arn}))
        self.assertFalse(allowed({"ExistingTableName": "keygate-restored"}))
        self.assertFalse(allowed({"ExistingTableStreamArn": arn}))
        # With one: the mapping reads the named stream, and the role only that table's streams (so
        # the stream of another table fails the deploy); the audit log is still the stack's.
        given = {"ExistingTableName": "keygate-restored", "ExistingTableStreamArn": arn}
        stack = deployed(self.cfn, given)["Resources"]
        self.assertEqual(stack["EventsStreamMapping"]["Properties"]["EventSourceArn"], {"Ref": "ExistingTableStreamArn"})
        (stream,) = [
            s
            for s in stack["EventsFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            if set(s["Action"]) & STREAM_READ_ACTIONS
        ]
        self.assertEqual(stream["Resource"], {"Fn::Sub": f"{EXISTING_TABLE_ARN}/stream/*"})
        self.assertIn("EventsTable", stack)
        for function in EVENTS_TABLE_GRANTS:
            env = stack[function]["Properties"]["Environment"]["Variables"]
            self.assertEqual(env["KEYGATE_EVENTS_TABLE"], {"Ref": "EventsTable"}, function)
        # Without: the created table's stream, and the parameter is nowhere.
        stack = deployed(self.cfn, {})["Resources"]
        self.assertEqual(stack["EventsStreamMapping"]["Properties"]["EventSourceArn"], {"Fn::GetAtt": ["Table", "StreamArn"]})
        self.assertEqual(references(stack, "ExistingTableStreamArn"), [])

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
            # The events function answers no one: how far behind the stream it is, not its latency.
            lag = "IteratorAge" if function in STREAM_READERS else "Duration"
            self.assertEqual(set(mine), {"Errors", "Throttles", lag}, function)
            for metric in ("Errors", "Throttles"):
                alarm = mine[metric]
                self.assertEqual(
                    (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"], alarm["Threshold"]),
                    ("Sum", 300, 1, 1),
                    (function, metric),
                )
                self.assertEqual(alarm["ComparisonOperator"], "GreaterThanOrEqualToThreshold")
            if function in STREAM_READERS:
                # The newest record of a batch more than 5 minutes old, for 15 minutes (stream
                # records live 24 hours).
                age = mine["IteratorAge"]
                self.assertEqual(
                    (age["Statistic"], age["Period"], age["EvaluationPeriods"], age["DatapointsToAlarm"]), ("Maximum", 300, 3, 3)
                )
                self.assertEqual((age["Threshold"], age["ComparisonOperator"]), (300000, "GreaterThanThreshold"))
                continue
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

    def test_a_batch_the_stream_mapping_gave_up_on_raises_an_alarm(self):
        (alarm,) = [a for a in self.alarms().values() if a.get("Namespace") == "AWS/SQS"]
        self.assertEqual(alarm["MetricName"], "ApproximateNumberOfMessagesVisible")
        self.assertEqual(alarm["Dimensions"], [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["EventsFailureQueue", "QueueName"]}}])
        self.assertEqual((alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]), ("Maximum", 300, 1))
        # Any message at all.
        self.assertEqual((alarm["Threshold"], alarm["ComparisonOperator"]), (0, "GreaterThanThreshold"))

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
        # a new kind of call needs its IAM action in some role and, on the license table, its
        # SystemErrors in the alarm. audit.rs and hooks.rs are the audit log's table's code, and call
        # no other table.
        store = os.path.join(ROOT, "shared", "src", "store", "dynamo")
        stream_calls = r"\.(describe_stream|get_shard_iterator|get_records|list_streams)\(\)"
        # Where a call names its table: `.table_name(&self.x)` or `.request_items(&self.x, …)`.
        tables = r"\.(?:table_name|request_items)\(\s*&?self\.(\w+)"
        called, stream_called, sources = set(), set(), {}
        for name in sorted(os.listdir(store)):
            if name.endswith(".rs"):
                with open(os.path.join(store, name)) as f:
                    text = f.read()
                named = set(re.findall(tables, text))
                if name in EVENTS_TABLE_SOURCES:
                    sources[name] = text
                    # The audit log's and the webhooks' code names no table but the events table...
                    self.assertEqual(named, {"events_table"}, name)
                else:
                    called |= {operation(call) for call in re.findall(DYNAMODB_CALLS, text)}
                    # ...and no other code names it.
                    self.assertNotIn("events_table", named, name)
                stream_called |= {operation(call) for call in re.findall(stream_calls, text)}
        self.assertEqual(set(sources), set(EVENTS_TABLE_SOURCES))
        # The license table: every operation in the alarm, each allowed to some role.
        self.assertEqual(called, DYNAMODB_OPERATIONS)
        allowed = {a.split(":")[1] for actions in TABLE_ACTIONS.values() for a in actions}
        # A transaction needs no action of its own: each of its items needs its item's action.
        self.assertLessEqual(called - {"TransactWriteItems"}, allowed)

        # The audit log's table, fn by fn: what each calls (action, table or index), and which
        # functions run it (their entry points, and what those call in turn).
        indexes = dict(re.findall(r'const (\w+): &str = "([^"]*)"', "".join(sources.values())))
        fns = {}
        for source, text in sources.items():
            for name, body in rust_fns(text).items():
                self.assertNotIn(name, fns, f"{name} in two files: which is called?")
                fns[name] = (source, body, events_table_calls(body, indexes))
        callees = {name: {c for c in re.findall(r"self\.(\w+)\(", body) if c in fns} for name, (_, body, _) in fns.items()}
        runs = {}
        for function, entries in EVENTS_TABLE_ENTRY_POINTS.items():
            self.assertLessEqual(entries, set(fns), function)
            runs[function] = set().union(*(self.reachable(entry, callees) for entry in entries))
        # A fn that calls the table runs in some function: a new one needs its entry point above.
        for name, (source, _, needed) in fns.items():
            if needed:
                self.assertTrue(any(name in reached for reached in runs.values()), f"{source} {name}: which function runs it?")
        # Each role allows exactly what the fns it runs call: a call it lacks, or a grant no fn of it
        # needs, fails. A grant on the table is kept to the partitions of the code that needs it (the
        # webhooks', the reminders', or both) unless audit-log code (an event's partition) needs it;
        # an index's grant has no partition condition.
        for function, reached in runs.items():
            needing = {}
            for name in reached:
                source, _, needed = fns[name]
                for grant in needed:
                    needing.setdefault(grant, []).append(EVENTS_TABLE_SOURCES[source])
            expected = {
                grant: None if grant[1] != "table" or None in partitions else leading_keys(*sorted(set(partitions)))
                for grant, partitions in needing.items()
            }
            self.assertEqual(self.events_table_grants(function), expected, function)
            self.assertEqual(expected, EVENTS_TABLE_GRANTS[function], function)

        # The entry points, as the callers call them. The webhook routes (api/hooks.rs, the issue
        # function's) call exactly the issue function's webhook entries...
        touches = {name for name in fns if any(fns[n][2] for n in self.reachable(name, callees))}
        hooks_fns = set(rust_fns(sources["hooks.rs"])) & touches
        shared = os.path.join(ROOT, "shared", "src")
        with open(os.path.join(shared, "api", "hooks.rs")) as f:
            routes = {c for c in re.findall(r"\.(\w+)\(", f.read()) if c in hooks_fns}
        self.assertEqual(routes, EVENTS_TABLE_ENTRY_POINTS["IssueFunction"] & hooks_fns)
        # ...the events function records a batch (stream.rs `record`: events, then deliveries, then
        # the reminders moved) and sends what is due (lambda.rs `deliver_webhooks`, after a batch and
        # on a tick; `remind_due`, on a tick)...
        reminders_fns = set(rust_fns(sources["reminders.rs"])) & touches
        self.assertEqual(reminders_fns, {"move_reminders", "remind_due"})
        self.assertLessEqual(reminders_fns, EVENTS_TABLE_ENTRY_POINTS["EventsFunction"])
        with open(os.path.join(store, "stream.rs")) as f:
            record = rust_fns(f.read())["record"]
        self.assertEqual(
            {c for c in re.findall(r"self\.(\w+)\(", record) if c in fns}, {"put_events", "enqueue_events", "move_reminders"}
        )
        with open(os.path.join(shared, "lambda.rs")) as f:
            lambda_fns = rust_fns(f.read())
        self.assertIn(".deliver_due(", lambda_fns["deliver_webhooks"])
        self.assertIn("deliver_webhooks(store", lambda_fns["follow_stream"])
        tick = lambda_fns["follow_stream"].split('get("Records").is_none() {', 1)[1].split("return Ok", 1)[0]
        self.assertIn("store.remind_due(", tick)
        self.assertNotRegex(lambda_fns["serve"], r"deliver_\w+\(|remind_\w+\(")
        # ...and nothing else runs webhook or reminder code (the other files that call it are the
        # local server's).
        outside = tuple(f"store/dynamo/{source}" for source in EVENTS_TABLE_SOURCES)
        callers = {"hooks": set(), "reminders": set()}
        for folder in ("shared/src", "functions", "cli/src"):
            for directory, _, files in os.walk(os.path.join(ROOT, folder)):
                for file in files:
                    path = os.path.relpath(os.path.join(directory, file), ROOT)
                    if file.endswith(".rs") and not path.endswith(outside):
                        with open(os.path.join(ROOT, path)) as f:
                            called = {c for c in re.findall(r"\.(\w+)\(", f.read())}
                        for kind, kind_fns in (("hooks", hooks_fns), ("reminders", reminders_fns)):
                            if called & kind_fns:
                                callers[kind].add(path)
        self.assertEqual(
            callers["hooks"], {"shared/src/api/hooks.rs", "shared/src/lambda.rs", "shared/src/store/dynamo/stream.rs"}
        )
        self.assertEqual(callers["reminders"], {"shared/src/lambda.rs", "shared/src/store/dynamo/stream.rs", "cli/src/lib.rs"})

        # The stream: the local follower's reads (`keygate serve`) are what Lambda's poller reads
        # with the events function's role.
        self.assertEqual(stream_called, STREAM_OPERATIONS)
        self.assertLessEqual({f"dynamodb:{call}" for call in stream_called}, STREAM_READ_ACTIONS)

    @staticmethod
    def reachable(name, callees):
        reached, todo = set(), [name]
        while todo:
            name = todo.pop()
            if name not in reached:
                reached.add(name)
                todo.extend(callees[name])
        return reached

    def test_the_dashboard_shows_functions_api_and_table(self):
        dashboards = [r["Properties"] for r in self.resources.values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
        self.assertEqual(len(dashboards), 1)
        text, variables = dashboards[0]["DashboardBody"]["Fn::Sub"]
        self.assertEqual(
            variables, {"TableName": TABLE_NAME, "FailureQueueName": {"Fn::GetAtt": ["EventsFailureQueue", "QueueName"]}}
        )
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
                options = metric[-1] if isinstance(metric[-1], dict) else {}
                dimensions = tuple(m for m in metric[2:] if not isinstance(m, dict))
                shown.add((metric[0], metric[1], metric[3], options.get("stat", properties.get("stat"))))
                shown.add((metric[0], metric[1], dimensions, options.get("stat", properties.get("stat"))))
        for function in TABLE_ACTIONS:
            for metric in ("Invocations", "Errors", "Throttles"):
                self.assertIn(("AWS/Lambda", metric, f"${{{function}}}", "Sum"), shown)
            self.assertIn(("AWS/Lambda", "Duration", f"${{{function}}}", "p99"), shown)
        for metric in ("4xx", "5xx"):
            self.assertIn(("AWS/ApiGateway", metric, "${Api}", "Sum"), shown)
        self.assertIn(("AWS/ApiGateway", "Latency", "${Api}", "p99"), shown)
        for metric in ("ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits", "ReadThrottleEvents", "WriteThrottleEvents"):
            self.assertIn(("AWS/DynamoDB", metric, "${TableName}", "Sum"), shown)
        # The audit log: its capacity and write throttles, the table's and its indexes' (each of
        # which has a hot partition: a day's events, every pending delivery).
        for metric in ("ConsumedReadCapacityUnits", "ConsumedWriteCapacityUnits", "WriteThrottleEvents"):
            self.assertIn(("AWS/DynamoDB", metric, ("TableName", "${EventsTable}"), "Sum"), shown)
        for index in ("ByDay", "ByDue"):
            self.assertIn(
                ("AWS/DynamoDB", "WriteThrottleEvents", ("TableName", "${EventsTable}", "GlobalSecondaryIndexName", index), "Sum"),
                shown,
            )
        # The events function: how far behind the stream, and the batches it gave up on.
        self.assertIn(("AWS/Lambda", "IteratorAge", "${EventsFunction}", "Maximum"), shown)
        self.assertIn(("AWS/SQS", "ApproximateNumberOfMessagesVisible", "${FailureQueueName}", "Maximum"), shown)
        self.assertIn("${Dashboard}", self.cfn["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"])

    def test_the_kms_key_and_reserved_concurrency_parameters_are_wired(self):
        template, _ = decode(TEMPLATE)
        self.assertEqual(template["Parameters"]["KmsKeyArn"]["Default"], "")
        self.assertEqual(self.cfn["Conditions"]["KmsKeyGiven"], {"Fn::Not": [{"Fn::Equals": [{"Ref": "KmsKeyArn"}, ""]}]})
        tables = ["Table", "EventsTable"]
        for table in tables:
            sse = self.resources[table]["Properties"]["SSESpecification"]
            self.assertEqual(
                sse, {"SSEEnabled": True, "SSEType": {"Fn::If": ["KmsKeyGiven", "KMS", NO_VALUE]}, "KMSMasterKeyId": KMS_KEY}
            )
        groups = [name for name, r in self.resources.items() if r["Type"] == "AWS::Logs::LogGroup"]
        self.assertEqual(len(groups), 6)
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
        for table in tables:
            self.assertEqual(stack[table]["Properties"]["SSESpecification"], {"SSEEnabled": True}, table)
        self.assertEqual(
            stack["EventsFailureQueue"]["Properties"], {"MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True}
        )
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
        for table in tables:
            self.assertEqual(
                stack[table]["Properties"]["SSESpecification"],
                {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": {"Ref": "KmsKeyArn"}},
                table,
            )
        self.assertEqual(
            stack["EventsFailureQueue"]["Properties"], {"MessageRetentionPeriod": 1209600, "KmsMasterKeyId": {"Ref": "KmsKeyArn"}}
        )
        self.assertIn(QUEUE_KMS_STATEMENT["Fn::If"][1], stack["EventsFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"])
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
