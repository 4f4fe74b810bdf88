// s3-blob-sync as containers on Azure Container Apps, for operators who do not want Functions:
//   - `watch` (minReplicas 1 .. maxReplicas): drains the SQS events queue into the copy queues
//     and copies what they hold; KEDA adds replicas by the copy queues' length;
//   - `serve --work-queues` (exactly 1, always): works the list-pages queue (bulk runs), fires
//     the optional scheduled run (scheduledRun on schedule), sweeps stalled runs; its HTTP API
//     is reachable only inside the environment, and only with an API key.
// Both run as one user-assigned managed identity: Azure Storage with Entra ID, AWS through the
// identity's token exchanged at STS (AssumeRoleWithWebIdentity), so no secret is stored
// anywhere (the optional API key aside).
//
//   az deployment group create -g RG -f infra/azure/worker-containerapp.bicep -p image=... ...
//
// The storage accounts are not created here: give the ones main.bicep made (its
// targetStorageAccountName, stateStorageAccountName, queueStorageAccountName outputs) or your
// own, in this resource group, with the target container already there. Then add this
// template's workerPrincipalId output to the AWS stack (WorkerPrincipalId of
// infra/aws/template.yaml): until the role trusts it, /readyz answers 503 (AWS unreachable)
// and nothing is copied. If main.bicep's Function App runs too, both consume the same queues
// (safe, but pointless): stop one.

targetScope = 'resourceGroup'

// ------------------------------------------------------------------------------------------
// Parameters
// ------------------------------------------------------------------------------------------

@description('Azure region of the apps and their environment.')
param location string = resourceGroup().location

@description('Short lowercase prefix (letters and digits, starting with a letter) for generated resource names.')
@minLength(3)
@maxLength(9)
param namePrefix string = 's3bsync'

@description('Tags put on every resource.')
param tags object = {
  app: 's3-blob-sync'
}

@description('The s3-blob-sync image, pinned: REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:DIGEST. No default, and `latest` (or neither tag nor digest) fails the deployment: every revision names the build it runs.')
param image string

@description('Name of an Azure Container Registry in this resource group that holds the image; the identity gets AcrPull on it and pulls with it. Empty: the image is in a public registry.')
param registryName string = ''

@description('Resource id of an existing Container Apps environment. Empty: this template creates one (workload profiles, Consumption).')
param existingEnvironmentId string = ''

@description('Workload profile the apps run on: `Consumption` in the environment this template creates; empty for an existing Consumption-only environment.')
param workloadProfileName string = 'Consumption'

@description('Resource id of the Log Analytics workspace that receives the created environment\'s console and system logs (e.g. main.bicep\'s workspace). Empty: the logs are not kept. Not used with existingEnvironmentId.')
param logAnalyticsWorkspaceId string = ''

@description('Target storage account (AZURE_STORAGE_ACCOUNT), in this resource group.')
@minLength(3)
@maxLength(24)
param targetStorageAccountName string

@description('Blob container that receives the objects (SYNC_TARGET_CONTAINER). It must exist: Storage Blob Data Contributor (and, with syncTags index, the blob index tags role) is granted on it alone.')
@minLength(3)
@maxLength(63)
param targetContainerName string = 'migrated'

@description('State storage account, the checkpoint and run tables (SYNC_STATE_ACCOUNT), in this resource group. Empty: the target account.')
param stateStorageAccountName string = ''

@description('Queue storage account, the work queues (SYNC_QUEUE_ACCOUNT), in this resource group. Empty: the state account.')
param queueStorageAccountName string = ''

@description('Copy queues (SYNC_COPY_QUEUES, 1-16): the same value as every other process on these queues (main.bicep\'s copyQueueCount).')
@minValue(1)
@maxValue(16)
param copyQueueCount int = 8

@description('Most watch replicas KEDA may run. The least is 1: watch is also what drains SQS, so one always runs.')
@minValue(1)
@maxValue(300)
param maxReplicas int = 10

@description('KEDA azure-queue target: messages waiting per replica. There is one rule per copy queue and KEDA follows the busiest, so with copy messages spread evenly over copyQueueCount queues a replica is added per about copyQueueCount x this many waiting messages.')
@minValue(1)
param queueLengthPerReplica int = 100

@description('vCPU of one replica (Consumption: 0.25-4, in steps of 0.25), as a string, e.g. \'1.0\'.')
param cpu string = '1.0'

@description('Memory of one replica; Consumption wants 2 GiB per vCPU (e.g. 1.0 -> \'2Gi\').')
param memory string = '2Gi'

@description('AWS region of the source bucket and the events queue (AWS_REGION).')
param awsRegion string

@description('IAM role the identity assumes (SYNC_AWS_ROLE_ARN): the RoleArn output of infra/aws/template.yaml, whose WorkerPrincipalId must be this template\'s workerPrincipalId output.')
param awsRoleArn string

@description('Audience of the identity\'s token for AWS (SYNC_AWS_TOKEN_AUDIENCE), the TokenAudience of infra/aws/template.yaml, e.g. api://<app id>.')
param awsTokenAudience string

@description('The SQS events queue (SYNC_SQS_QUEUE_URL): the QueueUrl output of infra/aws/template.yaml.')
param sqsQueueUrl string

@description('SYNC_MODE: additive never deletes blobs; mirror deletes blobs this tool wrote when the source object is gone.')
@allowed([
  'additive'
  'mirror'
])
param syncMode string = 'additive'

@description('SYNC_TAGS, where S3 object tags go: index (blob index tags, written with each commit; the identity also gets a custom role with only the blob index tags read/write data actions on the target container, which Storage Blob Data Contributor lacks), metadata (one metadata entry, s3sync_tags), or drop. metadata and drop need no extra permission, and deploy no role.')
@allowed([
  'index'
  'metadata'
  'drop'
])
param syncTags string = 'index'

@description('SYNC_SOURCE_PREFIX: removed from keys when naming blobs.')
param sourcePrefix string = ''

@description('SYNC_TARGET_PREFIX: put in front of every blob name.')
param targetPrefix string = ''

@description('SYNC_API_KEY of the serve app (32 or more characters, e.g. `openssl rand -hex 32`). Given: serve listens on 0.0.0.0:8080 behind internal ingress (HTTPS, reachable from inside the environment only; the serveUrl output), and every request but GET / needs the key. Empty: serve listens on loopback and has no ingress, so its HTTP API cannot be called; it still works the list-pages and copy queues, fires the schedule and sweeps stalled runs.')
@secure()
param serveApiKey string = ''

@description('SYNC_SCHEDULED_RUN of the serve app: the run it starts on `schedule`, the same JSON as a POST /api/runs body, e.g. {"source":{"bucket":"b"},"target":{"container":"c"}}. Leave out `notify` (this template sets no SYNC_WEBHOOK_* setting). Empty, with schedule empty: no scheduled run. Giving one of the two without the other fails the deployment.')
param scheduledRun string = ''

@description('SYNC_SCHEDULE of the serve app: when it starts scheduledRun, six-field NCRONTAB in UTC ({second} {minute} {hour} {day} {month} {day-of-week}), e.g. \'0 0 2 * * *\' for 02:00 UTC daily. Empty, with scheduledRun empty: no scheduled run. serve checks both when it starts and exits on a bad one.')
param schedule string = ''

// ------------------------------------------------------------------------------------------
// Names, checks and built-in role definitions
// ------------------------------------------------------------------------------------------

var suffix = take(uniqueString(resourceGroup().id), 8)
var createEnvironment = empty(existingEnvironmentId)
var hasWorkspace = !empty(logAnalyticsWorkspaceId)
var hasRegistry = !empty(registryName)
var hasApiKey = !empty(serveApiKey)
var stateAccountName = empty(stateStorageAccountName) ? targetStorageAccountName : stateStorageAccountName
var queueAccountName = empty(queueStorageAccountName) ? stateAccountName : queueStorageAccountName
// SYNC_TAGS=index writes blob index tags, which need their own data action (custom role below).
var tagsIndex = syncTags == 'index'

// The image must be pinned. Bicep has no pattern decorator, so the check is an expression:
// the part after the last `/` is NAME[:TAG][@sha256:DIGEST]; without a digest or a tag, or with
// the tag `latest`, checkedImage calls int() on the sentence below and the deployment fails
// (ARM's if() evaluates only the branch it takes).
var imageName = last(split(image, '/'))
var imageNameAndTag = first(split(imageName, '@'))
var imageTag = contains(imageNameAndTag, ':') ? last(split(imageNameAndTag, ':')) : ''
var imagePinned = (contains(imageName, '@sha256:') || !empty(imageTag)) && imageTag != 'latest'
var checkedImage = imagePinned ? image : string(int('image must name a tag other than latest, or a sha256 digest'))

// scheduledRun and schedule go together, checked the same way: with one of them empty and the
// other not, checkedSchedule calls int() on the sentence below. hasSchedule reads
// checkedSchedule, so the check runs wherever hasSchedule is used (the serve app's env).
var checkedSchedule = empty(schedule) == empty(scheduledRun) ? schedule : string(int('scheduledRun and schedule go together: give both or neither'))
var hasSchedule = !empty(checkedSchedule)

// Copy queues (defaults of SYNC_COPY_QUEUE and SYNC_COPY_QUEUES): copy-objects, copy-objects-1 ...
var copyQueueName = 'copy-objects'
var copyQueueNames = [for i in range(0, copyQueueCount): i == 0 ? copyQueueName : '${copyQueueName}-${i}']

// Built-in role definition ids (the same in every tenant).
var roleStorageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var roleStorageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var roleStorageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var roleAcrPull = '7f951dda-4ed3-4680-a7ca-43fe172d538d'

// ------------------------------------------------------------------------------------------
// Identity and its role assignments, each at the smallest scope that works (as main.bicep)
// ------------------------------------------------------------------------------------------

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-worker-${suffix}'
  location: location
  tags: tags
}

resource targetAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: targetStorageAccountName
}

resource targetBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: targetAccount
  name: 'default'
}

resource targetContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: targetBlobService
  name: targetContainerName
}

resource stateAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: stateAccountName
}

resource queueAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: queueAccountName
}

// Copies: write blobs in the target container only, not the whole account.
resource targetContainerBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(targetContainer.id, identity.id, roleStorageBlobDataContributor)
  scope: targetContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageBlobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Blob index tags (SYNC_TAGS=index), written with each commit and read back by verify: a
// custom role with the two tags data actions alone, on the target container alone (Storage
// Blob Data Owner has them too, but also ACLs and ownership). main.bicep deploys the same
// module, and so the same role definition, into its resource group: the two never conflict.
module targetContainerTags 'modules/blob-index-tags-role.bicep' = if (tagsIndex) {
  name: 'worker-blob-index-tags-role'
  params: {
    targetStorageAccountName: targetStorageAccountName
    targetContainerName: targetContainerName
    principalId: identity.properties.principalId
    assigneeId: identity.id
  }
}

// Checkpoint and run tables.
resource stateTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateAccount.id, identity.id, roleStorageTableDataContributor)
  scope: stateAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// Work queues: the binary sends, receives and parks poison messages; the KEDA scale rules
// read the copy queues' length with the same identity.
resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queueAccount.id, identity.id, roleStorageQueueDataContributor)
  scope: queueAccount
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  // Never read when hasRegistry is false (its one user below is conditional).
  name: hasRegistry ? registryName : 'none'
}

resource registryPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasRegistry) {
  name: guid(registry.id, identity.id, roleAcrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleAcrPull)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

var registries = hasRegistry ? [
  {
    server: '${registryName}${environment().suffixes.acrLoginServer}'
    identity: identity.id
  }
] : []

// ------------------------------------------------------------------------------------------
// Environment (unless an existing one is given), its logs to Log Analytics without a shared key
// ------------------------------------------------------------------------------------------

resource appEnvironment 'Microsoft.App/managedEnvironments@2025-01-01' = if (createEnvironment) {
  name: '${namePrefix}-env-${suffix}'
  location: location
  tags: tags
  properties: {
    // Logs leave through the diagnostic setting below (Entra-authenticated), not a workspace key.
    appLogsConfiguration: {
      destination: 'azure-monitor'
    }
    workloadProfiles: [
      {
        name: 'Consumption'
        workloadProfileType: 'Consumption'
      }
    ]
  }
}

resource environmentLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (createEnvironment && hasWorkspace) {
  name: 'to-log-analytics'
  scope: appEnvironment
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      {
        category: 'ContainerAppConsoleLogs'
        enabled: true
      }
      {
        category: 'ContainerAppSystemLogs'
        enabled: true
      }
    ]
  }
}

var environmentId = createEnvironment ? appEnvironment.id : existingEnvironmentId

// ------------------------------------------------------------------------------------------
// The apps' shared settings (every variable is described in local.settings.sample.json)
// ------------------------------------------------------------------------------------------

var commonEnv = [
  // Azure: the user-assigned identity (managed identity credential), no secret.
  {
    name: 'AZURE_CLIENT_ID'
    value: identity.properties.clientId
  }
  {
    name: 'AZURE_STORAGE_ACCOUNT'
    value: targetStorageAccountName
  }
  {
    name: 'SYNC_STATE_ACCOUNT'
    value: stateAccountName
  }
  {
    name: 'SYNC_QUEUE_ACCOUNT'
    value: queueAccountName
  }
  {
    name: 'SYNC_COPY_QUEUES'
    value: string(copyQueueCount)
  }
  {
    name: 'SYNC_TARGET_CONTAINER'
    value: targetContainerName
  }
  {
    name: 'SYNC_SOURCE_PREFIX'
    value: sourcePrefix
  }
  {
    name: 'SYNC_TARGET_PREFIX'
    value: targetPrefix
  }
  {
    name: 'SYNC_MODE'
    value: syncMode
  }
  {
    name: 'SYNC_TAGS'
    value: syncTags
  }
  // AWS: the identity's token for awsTokenAudience, exchanged for the role's credentials.
  {
    name: 'AWS_REGION'
    value: awsRegion
  }
  {
    name: 'SYNC_AWS_ROLE_ARN'
    value: awsRoleArn
  }
  {
    name: 'SYNC_AWS_TOKEN_AUDIENCE'
    value: awsTokenAudience
  }
  {
    name: 'SYNC_SQS_QUEUE_URL'
    value: sqsQueueUrl
  }
  {
    name: 'SYNC_LOG_FORMAT'
    value: 'json'
  }
]

// One KEDA azure-queue rule per copy queue, read with the identity (no connection string).
var copyQueueRules = [for q in copyQueueNames: {
  name: q
  custom: {
    type: 'azure-queue'
    metadata: {
      accountName: queueAccountName
      queueName: q
      queueLength: string(queueLengthPerReplica)
    }
    identity: identity.id
  }
}]

// ------------------------------------------------------------------------------------------
// watch: minReplicas 1, scaled by the copy queues
// ------------------------------------------------------------------------------------------

resource watchApp 'Microsoft.App/containerApps@2025-01-01' = {
  name: '${namePrefix}-watch-${suffix}'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: environmentId
    workloadProfileName: empty(workloadProfileName) ? null : workloadProfileName
    configuration: {
      activeRevisionsMode: 'Single'
      registries: registries
      // No ingress: watch serves nobody; the probes reach the replica directly.
    }
    template: {
      // watch exits within 30 s of SIGTERM (it stops receiving and hands back what it holds).
      terminationGracePeriodSeconds: 40
      containers: [
        {
          name: 'watch'
          image: checkedImage
          // The image's entrypoint is the binary: args only. The probes come from outside the
          // container, hence --health-bind 0.0.0.0 (they answer status only, no data).
          args: [
            'watch'
            '--health-port'
            '8080'
            '--health-bind'
            '0.0.0.0'
          ]
          env: commonEnv
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          probes: [
            // 200 while the loops run, also during a cloud outage: an outage never restarts it.
            {
              type: 'Liveness'
              httpGet: {
                path: '/livez'
                port: 8080
              }
              initialDelaySeconds: 10
              periodSeconds: 30
              timeoutSeconds: 5
              failureThreshold: 3
            }
            // 200 once credentials and queues were checked and both clouds answer.
            {
              type: 'Readiness'
              httpGet: {
                path: '/readyz'
                port: 8080
              }
              initialDelaySeconds: 5
              periodSeconds: 15
              timeoutSeconds: 5
              failureThreshold: 3
            }
          ]
        }
      ]
      scale: {
        minReplicas: 1
        maxReplicas: maxReplicas
        rules: copyQueueRules
      }
    }
  }
  dependsOn: [
    targetContainerBlobContributor
    targetContainerTags
    stateTableContributor
    queueContributor
    registryPull
    environmentLogs
  ]
}

// ------------------------------------------------------------------------------------------
// serve --work-queues: exactly one replica, always; internal ingress only with an API key.
// It is needed without the API too: it works the list-pages queue (bulk runs), fires the
// scheduled run (outside the Functions host nothing else does; one replica, so once: should a
// new revision overlap the old one at that moment, the second start over the same source and
// target is skipped as busy) and sweeps runs that stopped moving.
// ------------------------------------------------------------------------------------------

// The schedule, on serve alone, only when given.
var scheduleEnv = hasSchedule ? [
  {
    name: 'SYNC_SCHEDULED_RUN'
    value: scheduledRun
  }
  {
    name: 'SYNC_SCHEDULE'
    value: checkedSchedule
  }
] : []

resource serveApp 'Microsoft.App/containerApps@2025-01-01' = {
  name: '${namePrefix}-serve-${suffix}'
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: environmentId
    workloadProfileName: empty(workloadProfileName) ? null : workloadProfileName
    configuration: {
      activeRevisionsMode: 'Single'
      registries: registries
      secrets: hasApiKey ? [
        {
          name: 'sync-api-key'
          value: serveApiKey
        }
      ] : []
      // external: false: reachable from inside the environment only, never from the internet.
      ingress: hasApiKey ? {
        external: false
        targetPort: 8080
        transport: 'http'
        allowInsecure: false
      } : null
    }
    template: {
      terminationGracePeriodSeconds: 40
      containers: [
        {
          name: 'serve'
          image: checkedImage
          // Beyond loopback serve refuses to start without SYNC_API_KEY.
          args: hasApiKey ? [
            'serve'
            '--work-queues'
            '--port'
            '8080'
            '--bind'
            '0.0.0.0'
          ] : [
            'serve'
            '--work-queues'
            '--port'
            '8080'
          ]
          env: concat(commonEnv, scheduleEnv, hasApiKey ? [
            {
              name: 'SYNC_API_KEY'
              secretRef: 'sync-api-key'
            }
          ] : [])
          resources: {
            cpu: json(cpu)
            memory: memory
          }
        }
      ]
      // Exactly one serve process per deployment; adding copy capacity is watch's job.
      scale: {
        minReplicas: 1
        maxReplicas: 1
      }
    }
  }
  dependsOn: [
    targetContainerBlobContributor
    targetContainerTags
    stateTableContributor
    queueContributor
    registryPull
    environmentLogs
  ]
}

// ------------------------------------------------------------------------------------------
// Outputs
// ------------------------------------------------------------------------------------------

@description('Object (principal) id of the workers\' identity: WorkerPrincipalId of infra/aws/template.yaml (the `sub` the AWS role trusts).')
output workerPrincipalId string = identity.properties.principalId

@description('Client id of the workers\' identity (AZURE_CLIENT_ID in the apps).')
output workerClientId string = identity.properties.clientId

@description('Resource id of the workers\' identity.')
output workerIdentityId string = identity.id

@description('Container Apps environment the apps run in.')
output environmentId string = environmentId

@description('The watch app.')
output watchAppName string = watchApp.name

@description('The serve app.')
output serveAppName string = serveApp.name

@description('Base URL of the serve app\'s HTTP API inside the environment; empty without serveApiKey.')
output serveUrl string = hasApiKey ? 'https://${serveApp.properties.configuration.ingress.fqdn}' : ''
