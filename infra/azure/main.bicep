// s3-blob-sync on Azure: the Functions custom handler, its storage, identity, monitoring and the
// optional Logic App that starts runs. Deploy into an existing resource group:
//
//   az deployment group create -g RG -f infra/azure/main.bicep -p @main.parameters.json
//
// docs/deploy.md walks through the whole order (Azure first, then AWS, then this template a
// second time with the AWS outputs and the Logic App switched on).
//
// Hosting: Flex Consumption (FC1, Linux). Flex runs custom handlers: the runtime is given as
// functionAppConfig.runtime { name: 'custom', version: '1.0' } instead of the
// FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION app settings, which Flex refuses.
//
// Storage layout. The binary reads ONE account, AZURE_STORAGE_ACCOUNT, for the target container
// AND its queues (copy-objects, list-pages, sqs-rejects) AND its tables (objects, runs)
// (src/config.rs: `Config::azure`). So those queues and tables live on the target account, and
// the queue trigger's `WorkQueue` connection points there too. The Functions host's own storage
// (AzureWebJobsStorage: timers, leases, keys) and the Flex deployment package live on a second
// account. Neither account accepts shared keys; every caller authenticates with Entra ID.

targetScope = 'resourceGroup'

// ------------------------------------------------------------------------------------------
// Parameters
// ------------------------------------------------------------------------------------------

@description('Azure region for every resource. Must offer Flex Consumption (`az functionapp list-flexconsumption-locations`).')
param location string = resourceGroup().location

@description('Short lowercase prefix (letters and digits, starting with a letter) for generated resource names.')
@minLength(3)
@maxLength(9)
param namePrefix string = 's3bsync'

@description('Tags put on every resource.')
param tags object = {
  app: 's3-blob-sync'
}

@description('Name of the target storage account (3-24 lowercase letters and digits). It holds the target container only. Created by this template.')
@minLength(3)
@maxLength(24)
param targetStorageAccountName string = '${namePrefix}tgt${take(uniqueString(resourceGroup().id), 8)}'

@description('Blob container that receives the objects (SYNC_TARGET_CONTAINER: used when a message names none).')
@minLength(3)
@maxLength(63)
param targetContainerName string = 'migrated'

@description('Days a deleted or overwritten target blob stays recoverable (blob soft delete). 0 turns soft delete off.')
@minValue(0)
@maxValue(365)
param targetSoftDeleteDays int = 7

@description('Name of the state storage account (3-24 lowercase letters and digits): the checkpoint and run tables (SYNC_STATE_ACCOUNT). Apart from the target and the queues, so that each account\'s request target serves one kind of work (about 3.9 table requests per small object; docs/scale.md). Created by this template.')
@minLength(3)
@maxLength(24)
param stateStorageAccountName string = '${namePrefix}st${take(uniqueString(resourceGroup().id), 8)}'

@description('Name of the queue storage account (3-24 lowercase letters and digits): the work queues (SYNC_QUEUE_ACCOUNT; about 2.4 queue requests per small object). Created by this template.')
@minLength(3)
@maxLength(24)
param queueStorageAccountName string = '${namePrefix}q${take(uniqueString(resourceGroup().id), 8)}'

@description('Copy queues (SYNC_COPY_QUEUES, 1-16): copy messages spread over this many, so no single queue\'s target (about 2,000 messages/s) caps a run. Eight carry 16,000 messages/s, past what one state account serves (docs/scale.md).')
@minValue(1)
@maxValue(16)
param copyQueueCount int = 8

@description('Name of the Functions host storage account (AzureWebJobsStorage and the Flex deployment package).')
@minLength(3)
@maxLength(24)
param hostStorageAccountName string = '${namePrefix}host${take(uniqueString(resourceGroup().id), 8)}'

@description('Name of the Function App (also its host name: NAME.azurewebsites.net).')
param functionAppName string = '${namePrefix}-func-${take(uniqueString(resourceGroup().id), 8)}'

@description('Flex Consumption: the most instances the app may scale out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Flex Consumption: memory of one instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('AWS region of the source bucket (AWS_REGION).')
param awsRegion string

@description('Audience of the managed-identity token the binary exchanges with AWS STS (SYNC_AWS_TOKEN_AUDIENCE), e.g. api://<app id> of the Entra app registration created for this purpose. Also the ClientIdList of the AWS OIDC provider.')
param awsTokenAudience string

@description('ARN of the IAM role to assume (SYNC_AWS_ROLE_ARN): the RoleArn output of infra/aws/template.yaml. Empty on the first deployment, before the AWS stack exists.')
param awsRoleArn string = ''

@description('URL of the SQS queue that receives the bucket events (SYNC_SQS_QUEUE_URL): the QueueUrl output of infra/aws/template.yaml. Empty: DrainSqs has nothing to drain.')
param sqsQueueUrl string = ''

@description('Default copy mode (SYNC_MODE): additive never deletes blobs; mirror deletes blobs this tool wrote when the source object is gone.')
@allowed([
  'additive'
  'mirror'
])
param syncMode string = 'additive'

@description('SYNC_COPY_PATH: auto (server-side, streamed when Azure cannot read the source), server-side, or streamed.')
@allowed([
  'auto'
  'server-side'
  'streamed'
])
param copyPath string = 'auto'

@description('SYNC_METADATA_POLICY for S3 metadata names Azure rejects: exclude, fail, or rename.')
@allowed([
  'exclude'
  'fail'
  'rename'
])
param metadataPolicy string = 'exclude'

@description('SYNC_TAGS, where S3 object tags go: index (blob index tags, written with each commit; the app\'s identity also gets a custom role with only the blob index tags read/write data actions on the target container, which Storage Blob Data Contributor lacks), metadata (one metadata entry, s3sync_tags), or drop. metadata and drop need no extra permission, and deploy no role.')
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

@description('SYNC_BLOCK_SIZE_MIB: block size for staged copies (1-4000).')
@minValue(1)
@maxValue(4000)
param blockSizeMiB int = 4

@description('SYNC_BLOCK_CONCURRENCY: blocks in flight per object (1-256).')
@minValue(1)
@maxValue(256)
param blockConcurrency int = 8

@description('SYNC_STREAM_BUFFER_MIB: object bytes held in memory by all streamed copies of one instance together (1-65536).')
@minValue(1)
@maxValue(65536)
param streamBufferMiB int = 64

@description('SYNC_INVOCATION_MIB: most MiB one invocation copies; bigger objects are split into block ranges.')
@minValue(1)
param invocationMiB int = 2048

@description('SYNC_PRESIGN_EXPIRY_SECS: life of presigned source URLs (60-3600).')
@minValue(60)
@maxValue(3600)
param presignExpirySecs int = 900

@description('SYNC_DRAIN_BUDGET_SECS: how long one DrainSqs invocation receives (keep under host.json functionTimeout).')
@minValue(5)
@maxValue(540)
param drainBudgetSecs int = 50

@description('SYNC_SCHEDULE: NCRONTAB (six fields, UTC) of the ScheduledRun timer. Always set: the function binds %SYNC_SCHEDULE%.')
param syncSchedule string = '0 0 2 * * *'

@description('Run started by the ScheduledRun timer: the same JSON as the POST /api/runs body, e.g. {"source":{"bucket":"b","prefix":""},"target":{"container":"migrated","prefix":""},"mode":"additive"}. Leave out `notify`: "setting:SYNC_WEBHOOK_DEFAULT" (notifyWebhookUrl) is added here. Empty object: no scheduled run is configured (SYNC_SCHEDULED_RUN is empty).')
param scheduledRun object = {}

@description('Webhook (Slack/Teams incoming webhook URL) told when a run ends: added as `notify` to the scheduled run and used by the Logic App. Stored in Key Vault only. Empty: no notifications, and no Logic App.')
@secure()
param notifyWebhookUrl string = ''

@description('Deploy the Logic App that starts a run on a schedule and posts the summary to notifyWebhookUrl. Needs the function code deployed first (it reads the host key), so switch it on in the second deployment.')
param deployLogicApp bool = false

@description('Logic App run: source bucket.')
param logicAppBucket string = ''

@description('Logic App run: source key prefix.')
param logicAppSourcePrefix string = ''

@description('Logic App run: target container (default: targetContainerName).')
param logicAppContainer string = ''

@description('Logic App run: target blob prefix.')
param logicAppTargetPrefix string = ''

@description('E-mail address that receives the alerts.')
param alertEmail string

@description('Alert when the oldest SQS message (the `lag` event, field oldest_age_ms) is older than this many seconds.')
@minValue(60)
param sqsLagThresholdSeconds int = 900

@description('Days Log Analytics keeps the logs.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

// ------------------------------------------------------------------------------------------
// Names and built-in role definitions
// ------------------------------------------------------------------------------------------

var suffix = take(uniqueString(resourceGroup().id), 8)
var planName = '${namePrefix}-plan-${suffix}'
var workspaceName = '${namePrefix}-logs-${suffix}'
var appInsightsName = '${namePrefix}-appi-${suffix}'
var keyVaultName = '${namePrefix}-kv-${suffix}'
var actionGroupName = '${namePrefix}-alerts-${suffix}'
var logicAppName = '${namePrefix}-runs-${suffix}'
var deploymentContainerName = 'app-package'

// Queues and tables the binary and the host use (defaults of SYNC_COPY_QUEUE, SYNC_LIST_QUEUE,
// SYNC_REJECT_QUEUE, SYNC_CHECKPOINT_TABLE, SYNC_RUNS_TABLE). The poison queues are created
// here too so they exist (and can be watched) before the first message is parked.
var copyQueueName = 'copy-objects'
var listQueueName = 'list-pages'
var rejectQueueName = 'sqs-rejects'
// Copy queues past the first (`copy-objects-1` …), each with its poison queue; the
// package's CopyObject1 … CopyObject15 functions take them (decision 125).
var copySiblingQueueNames = [for i in range(1, copyQueueCount - 1): '${copyQueueName}-${i}']
var copySiblingPoisonNames = [for i in range(1, copyQueueCount - 1): '${copyQueueName}-${i}-poison']
var queueNames = concat([
  copyQueueName
  '${copyQueueName}-poison'
  listQueueName
  '${listQueueName}-poison'
  rejectQueueName
], copySiblingQueueNames, copySiblingPoisonNames)
var checkpointTableName = 'objects'
var runsTableName = 'runs'
var tableNames = [
  checkpointTableName
  runsTableName
]

// Built-in role definition ids (the same in every tenant).
var roleStorageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var roleStorageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
var roleStorageQueueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var roleStorageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var roleKeyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var roleMonitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'

var hasWebhook = !empty(notifyWebhookUrl)
var hasScheduledRun = !empty(scheduledRun)
// The run names its webhook by app setting (SYNC_WEBHOOK_DEFAULT, a Key Vault reference):
// the URL is never stored with a run.
var scheduledRunSpec = hasWebhook ? union(scheduledRun, {
  notify: 'setting:SYNC_WEBHOOK_DEFAULT'
}) : scheduledRun
var logicAppEnabled = deployLogicApp && hasWebhook
// SYNC_TAGS=index writes blob index tags, which need their own data action (custom role below).
var tagsIndex = syncTags == 'index'

// ------------------------------------------------------------------------------------------
// Monitoring: Log Analytics + workspace-based Application Insights
// ------------------------------------------------------------------------------------------

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: logRetentionDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    // Telemetry is accepted only with an Entra token: the app sends it as its managed identity
    // (APPLICATIONINSIGHTS_AUTHENTICATION_STRING + Monitoring Metrics Publisher below).
    DisableLocalAuth: true
  }
}

// ------------------------------------------------------------------------------------------
// Storage: the Functions host account and the target account
// ------------------------------------------------------------------------------------------

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_43: The name is computed from parameters (checkov cannot evaluate it); @minLength/@maxLength and the lowercase namePrefix keep it valid.
  // checkov:skip=CKV_AZURE_35: Flex Consumption without VNet integration reaches its storage over the public endpoint; access is Entra-only (shared keys off).
  // checkov:skip=CKV_AZURE_59: Same reason as CKV_AZURE_35: no private endpoint in this template; public endpoint with Entra-only auth.
  // checkov:skip=CKV_AZURE_206: Host state and the package can be rebuilt; LRS is enough.
  name: hostStorageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource hostBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource targetStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_43: The name is computed from parameters (checkov cannot evaluate it); @minLength/@maxLength and the lowercase namePrefix keep it valid.
  // checkov:skip=CKV_AZURE_35: The Flex app has no VNet integration in this template, so it reaches the target account over the public endpoint; access is Entra-only (shared keys off).
  // checkov:skip=CKV_AZURE_59: Same reason as CKV_AZURE_35: public endpoint with Entra-only auth.
  // checkov:skip=CKV_AZURE_206: Replication (LRS/ZRS/GRS) is a cost decision for the target data; change the sku for GRS.
  name: targetStorageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    accessTier: 'Hot'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource targetBlobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: targetStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: targetSoftDeleteDays > 0
      days: targetSoftDeleteDays > 0 ? targetSoftDeleteDays : 1
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource targetContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: targetBlobService
  name: targetContainerName
  properties: {
    publicAccess: 'None'
  }
}

// State: the checkpoint and run tables (the first account), and the work queues (the second),
// each on its own account (decision 124), so the target's request target serves the copies
// alone and each of these serves one kind of work.
var stateAccountNames = [
  stateStorageAccountName
  queueStorageAccountName
]

resource stateAccounts 'Microsoft.Storage/storageAccounts@2023-05-01' = [for name in stateAccountNames: {
  // checkov:skip=CKV_AZURE_43: The name is computed from parameters (checkov cannot evaluate it); @minLength/@maxLength and the lowercase namePrefix keep it valid.
  // checkov:skip=CKV_AZURE_35: The Flex app has no VNet integration in this template, so it reaches the state accounts over the public endpoint; access is Entra-only (shared keys off).
  // checkov:skip=CKV_AZURE_59: Same reason as CKV_AZURE_35: public endpoint with Entra-only auth.
  // checkov:skip=CKV_AZURE_206: Rows and messages are rebuilt by a listing run if lost; LRS is the cost choice, change the sku for GRS.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: stateAccounts[1]
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for q in queueNames: {
  parent: queueService
  name: q
}]

resource stateTableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: stateAccounts[0]
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for t in tableNames: {
  parent: stateTableService
  name: t
}]

// ------------------------------------------------------------------------------------------
// Key Vault (RBAC mode): the webhook, the scheduled run that carries it, the Logic App's key
// ------------------------------------------------------------------------------------------

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: The Functions platform resolves Key Vault references and ARM reads secrets for the Logic App over the public endpoint; no VNet in this template. Access is RBAC-only.
  // checkov:skip=CKV_AZURE_189: Same reason as CKV_AZURE_109: public endpoint, RBAC-only access, no VNet.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    enablePurgeProtection: true
    enabledForTemplateDeployment: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource webhookSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (hasWebhook) {
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov does not see the properties of a conditional (if) resource.
  // checkov:skip=CKV_AZURE_41: A webhook URL does not expire on a schedule; it is rotated by redeploying with a new value.
  parent: keyVault
  name: 'notify-webhook'
  properties: {
    value: notifyWebhookUrl
    contentType: 'text/uri-list'
  }
}

resource scheduledRunSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (hasScheduledRun) {
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov does not see the properties of a conditional (if) resource.
  // checkov:skip=CKV_AZURE_41: The run spec changes only with a deployment; it has no natural expiry.
  parent: keyVault
  name: 'scheduled-run'
  properties: {
    // The spec names its webhook by setting; it is kept with the other run inputs here.
    value: string(scheduledRunSpec)
    contentType: 'application/json'
  }
}

// ------------------------------------------------------------------------------------------
// Function App: Flex Consumption, Linux, custom handler, system-assigned identity
// ------------------------------------------------------------------------------------------

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy for Flex Consumption exists only in some regions; the work is queue-driven and retried, so a zone outage delays it rather than losing it.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: The HTTP API (/api/runs) is called by the Logic App and operators; it is protected by function keys, not by network isolation.
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero on queue and timer events; always-ready instances are a cost option, not needed for failover.
  // checkov:skip=CKV_AZURE_213: Flex Consumption manages instance health itself; App Service health-check pings do not apply to this plan.
  // checkov:skip=CKV_AZURE_17: Client certificates are not used; callers authenticate with function keys.
  name: functionAppName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    keyVaultReferenceIdentity: 'SystemAssigned'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'SystemAssignedIdentity'
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        // Functions host storage, identity-based (no connection string, no key).
        {
          name: 'AzureWebJobsStorage__accountName'
          value: hostStorage.name
        }
        // Queue trigger connection of CopyObject and ListPage: the account the binary writes
        // its work queues to (SYNC_QUEUE_ACCOUNT).
        {
          name: 'WorkQueue__queueServiceUri'
          value: 'https://${stateAccounts[1].name}.queue.${environment().suffixes.storage}'
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: appInsights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'Authorization=AAD'
        }
        // Target account, reached with the managed identity (Entra ID).
        {
          name: 'AZURE_STORAGE_ACCOUNT'
          value: targetStorage.name
        }
        // State account (tables) and queue account (work queues), with the same identity.
        {
          name: 'SYNC_STATE_ACCOUNT'
          value: stateAccounts[0].name
        }
        {
          name: 'SYNC_QUEUE_ACCOUNT'
          value: stateAccounts[1].name
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
          name: 'SYNC_TARGET_PREFIX'
          value: targetPrefix
        }
        {
          name: 'SYNC_SOURCE_PREFIX'
          value: sourcePrefix
        }
        // AWS: web identity federation, no access keys.
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
        // Behaviour.
        {
          name: 'SYNC_MODE'
          value: syncMode
        }
        {
          name: 'SYNC_COPY_PATH'
          value: copyPath
        }
        {
          name: 'SYNC_METADATA_POLICY'
          value: metadataPolicy
        }
        {
          name: 'SYNC_TAGS'
          value: syncTags
        }
        {
          name: 'SYNC_BLOCK_SIZE_MIB'
          value: string(blockSizeMiB)
        }
        {
          name: 'SYNC_BLOCK_CONCURRENCY'
          value: string(blockConcurrency)
        }
        {
          name: 'SYNC_STREAM_BUFFER_MIB'
          value: string(streamBufferMiB)
        }
        {
          name: 'SYNC_INVOCATION_MIB'
          value: string(invocationMiB)
        }
        {
          name: 'SYNC_PRESIGN_EXPIRY_SECS'
          value: string(presignExpirySecs)
        }
        {
          name: 'SYNC_DRAIN_BUDGET_SECS'
          value: string(drainBudgetSecs)
        }
        // Must equal host.json extensions.queues.maxDequeueCount.
        {
          name: 'SYNC_MAX_DEQUEUE_COUNT'
          value: '5'
        }
        {
          name: 'SYNC_LOG_FORMAT'
          value: 'json'
        }
        // Queue and table names: must match functions/*/function.json.
        {
          name: 'SYNC_COPY_QUEUE'
          value: copyQueueName
        }
        {
          name: 'SYNC_LIST_QUEUE'
          value: listQueueName
        }
        {
          name: 'SYNC_REJECT_QUEUE'
          value: rejectQueueName
        }
        {
          name: 'SYNC_CHECKPOINT_TABLE'
          value: checkpointTableName
        }
        {
          name: 'SYNC_RUNS_TABLE'
          value: runsTableName
        }
        // Scheduled runs: the timer always needs a schedule; the run spec comes from Key Vault.
        {
          name: 'SYNC_SCHEDULE'
          value: syncSchedule
        }
        {
          name: 'SYNC_SCHEDULED_RUN'
          value: hasScheduledRun ? '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=scheduled-run)' : ''
        }
        // The webhook a run names as "setting:SYNC_WEBHOOK_DEFAULT": read where it is sent,
        // so rotating the Key Vault secret reaches runs already under way.
        {
          name: 'SYNC_WEBHOOK_DEFAULT'
          value: hasWebhook ? '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=notify-webhook)' : ''
        }
      ]
    }
  }
  dependsOn: [
    // The app starts pulling its package at once: let the container exist first.
    deploymentContainer
    // SYNC_SCHEDULED_RUN and SYNC_WEBHOOK_DEFAULT are Key Vault references to these secrets.
    scheduledRunSecret
    webhookSecret
  ]
}

// ------------------------------------------------------------------------------------------
// Role assignments for the app's managed identity, each at the smallest scope that works
// ------------------------------------------------------------------------------------------

// Functions host: timers, leases and keys in AzureWebJobsStorage, plus reading the Flex
// deployment package (the deployment container is on this account).
resource hostBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, functionApp.id, roleStorageBlobDataOwner)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageBlobDataOwner)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Copies: write blobs in the target container only, not the whole account.
resource targetContainerBlobContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(targetContainer.id, functionApp.id, roleStorageBlobDataContributor)
  scope: targetContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageBlobDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Blob index tags (SYNC_TAGS=index), written with each commit and read back by verify: a
// custom role with the two tags data actions alone, on the target container alone (Storage
// Blob Data Owner has them too, but also ACLs and ownership). worker-containerapp.bicep
// deploys the same module, and so the same role definition, into its resource group.
module targetContainerTags 'modules/blob-index-tags-role.bicep' = if (tagsIndex) {
  name: 'blob-index-tags-role'
  params: {
    targetStorageAccountName: targetStorage.name
    targetContainerName: targetContainer.name
    principalId: functionApp.identity.principalId
    assigneeId: functionApp.id
  }
}

// Work queues (binary sends, host triggers and parks poison messages) on the queue account.
resource queueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateAccounts[1].id, functionApp.id, roleStorageQueueDataContributor)
  scope: stateAccounts[1]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageQueueDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Checkpoint and run tables on the state account.
resource stateTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateAccounts[0].id, functionApp.id, roleStorageTableDataContributor)
  scope: stateAccounts[0]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageTableDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Key Vault references in app settings.
resource vaultSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, functionApp.id, roleKeyVaultSecretsUser)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleKeyVaultSecretsUser)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Telemetry with an Entra token (local auth is off on Application Insights).
resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, functionApp.id, roleMonitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleMonitoringMetricsPublisher)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// ------------------------------------------------------------------------------------------
// Alerts: an action group and six log alerts on the handler's JSON log lines (traces table)
// ------------------------------------------------------------------------------------------

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 's3blobsync'
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Every alert query starts here: the JSON object in the log line (the host may prefix the
// line), with customDimensions as a fallback when the fields arrive structured. Kept as one-line
// strings: the Bicep parser checkov uses stalls on long multi-line string literals.
var parsedTraces = 'traces\n| extend j = parse_json(extract("(\\\\{.*\\\\})", 1, message))\n| extend outcome = coalesce(tostring(j.outcome), tostring(customDimensions.outcome), tostring(customDimensions.prop__outcome))\n'

var alertFailedCopies = '${parsedTraces}| where outcome == "failed"\n'

var alertPoisoned = '${parsedTraces}| where outcome == "poisoned" or (message has "MaxDequeueCount" and message has "-poison")\n'

var alertLag = '${parsedTraces}| where outcome == "lag"\n| extend oldest_age_ms = todouble(coalesce(tostring(j.oldest_age_ms), tostring(customDimensions.oldest_age_ms), tostring(customDimensions.prop__oldest_age_ms)))\n| where oldest_age_ms > ${sqsLagThresholdSeconds * 1000}\n'

var alertRunFailed = '${parsedTraces}| where outcome == "run_finished"\n| extend state = coalesce(tostring(j.state), tostring(customDimensions.state), tostring(customDimensions.prop__state))\n| where state == "Failed"\n'

var alertScheduleSkipped = '${parsedTraces}| where outcome == "schedule_skipped"\n'

var alertRunSwept = '${parsedTraces}| where outcome == "run_swept"\n'

var alerts = [
  {
    key: 'failed-copies'
    displayName: 's3-blob-sync: failed copies'
    description: 'At least one object ended `failed` in the last 5 minutes (the host retries it; see the failures-by-reason query).'
    severity: 2
    query: alertFailedCopies
    frequency: 'PT5M'
    window: 'PT5M'
    autoMitigate: false
  }
  {
    key: 'poison-messages'
    displayName: 's3-blob-sync: messages parked in a poison queue'
    description: 'A copy-objects or list-pages message failed maxDequeueCount times and was moved to copy-objects-poison / list-pages-poison.'
    severity: 1
    query: alertPoisoned
    frequency: 'PT5M'
    window: 'PT5M'
    autoMitigate: false
  }
  {
    key: 'sqs-lag'
    displayName: 's3-blob-sync: SQS backlog is old'
    description: 'The oldest S3 event waiting in SQS is older than ${sqsLagThresholdSeconds} s (lag event, oldest_age_ms).'
    severity: 2
    query: alertLag
    frequency: 'PT5M'
    window: 'PT15M'
    autoMitigate: true
  }
  {
    key: 'run-failed'
    displayName: 's3-blob-sync: run failed'
    description: 'A bulk run ended in state Failed (run_finished event).'
    severity: 1
    query: alertRunFailed
    frequency: 'PT5M'
    window: 'PT5M'
    autoMitigate: false
  }
  {
    key: 'schedule-skipped'
    displayName: 's3-blob-sync: scheduled run skipped'
    description: 'ScheduledRun did not start its run because the previous one is still running (schedule_skipped names it). Once is a slow run; every time is a run that stopped moving, which the sweep ends after SYNC_RUN_STALL_SECS.'
    severity: 2
    query: alertScheduleSkipped
    frequency: 'PT15M'
    window: 'PT15M'
    autoMitigate: true
  }
  {
    key: 'run-swept'
    displayName: 's3-blob-sync: a run that stopped moving was ended'
    description: 'The sweep ended a run whose chain of messages or process stopped (run_swept names the run and why); start it again, it skips what was copied.'
    severity: 1
    query: alertRunSwept
    frequency: 'PT5M'
    window: 'PT5M'
    autoMitigate: false
  }
]

resource logAlerts 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for a in alerts: {
  name: '${namePrefix}-${a.key}-${suffix}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: a.displayName
    description: a.description
    severity: a.severity
    enabled: true
    scopes: [
      appInsights.id
    ]
    evaluationFrequency: a.frequency
    windowSize: a.window
    autoMitigate: a.autoMitigate
    criteria: {
      allOf: [
        {
          query: a.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

// ------------------------------------------------------------------------------------------
// Workbook: the queries of infra/monitoring/queries.kql as charts and grids
// ------------------------------------------------------------------------------------------

resource workbook 'Microsoft.Insights/workbooks@2022-04-01' = {
  name: guid(resourceGroup().id, appInsights.id, 's3-blob-sync-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 's3-blob-sync'
    category: 'workbook'
    version: 'Notebook/1.0'
    sourceId: toLower(appInsights.id)
    serializedData: loadTextContent('../monitoring/workbook.json')
  }
}

// ------------------------------------------------------------------------------------------
// Logic App (optional, second deployment): scheduled POST /api/runs, summary to the webhook
// ------------------------------------------------------------------------------------------

// The host's default function key, written to Key Vault; the Logic App reads it from there.
// listKeys needs a running host, hence the code must be deployed before deployLogicApp=true.
resource functionKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (logicAppEnabled) {
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov does not see the properties of a conditional (if) resource.
  // checkov:skip=CKV_AZURE_41: The value mirrors the host key; it is refreshed by every deployment, not by an expiry date.
  parent: keyVault
  name: 'logicapp-function-key'
  properties: {
    value: listKeys('${functionApp.id}/host/default', '2024-04-01').functionKeys.default
    contentType: 'text/plain'
  }
}

resource vaultRef 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

module logicApp 'modules/logic-app.bicep' = if (logicAppEnabled) {
  name: 'logic-app'
  params: {
    name: logicAppName
    location: location
    tags: tags
    definition: loadJsonContent('../logic-app/workflow.json')
    functionBaseUrl: 'https://${functionApp.properties.defaultHostName}'
    functionKey: vaultRef.getSecret('logicapp-function-key')
    notifyWebhook: vaultRef.getSecret('notify-webhook')
    bucket: logicAppBucket
    prefix: logicAppSourcePrefix
    container: empty(logicAppContainer) ? targetContainerName : logicAppContainer
    targetPrefix: logicAppTargetPrefix
  }
  dependsOn: [
    functionKeySecret
    webhookSecret
  ]
}

// The same parameters, another workflow: on demand, it waits until GET /api/cutover answers
// ready (or 24 h pass) and posts the gate's answer with its reasons.
module cutoverLogicApp 'modules/logic-app.bicep' = if (logicAppEnabled) {
  name: 'logic-app-cutover'
  params: {
    name: '${logicAppName}-cutover'
    location: location
    tags: tags
    definition: loadJsonContent('../logic-app/cutover-workflow.json')
    functionBaseUrl: 'https://${functionApp.properties.defaultHostName}'
    functionKey: vaultRef.getSecret('logicapp-function-key')
    notifyWebhook: vaultRef.getSecret('notify-webhook')
    bucket: logicAppBucket
    prefix: logicAppSourcePrefix
    container: empty(logicAppContainer) ? targetContainerName : logicAppContainer
    targetPrefix: logicAppTargetPrefix
  }
  dependsOn: [
    functionKeySecret
    webhookSecret
  ]
}

// ------------------------------------------------------------------------------------------
// Outputs
// ------------------------------------------------------------------------------------------

@description('Function App name (for az functionapp commands).')
output functionAppName string = functionApp.name

@description('Base URL of the HTTP API (POST /api/runs, GET /api/runs/{id}).')
output functionBaseUrl string = 'https://${functionApp.properties.defaultHostName}'

@description('Object (principal) id of the app\'s managed identity: the `sub` the AWS role trusts (FunctionPrincipalId of infra/aws/template.yaml).')
output functionPrincipalId string = functionApp.identity.principalId

@description('Entra tenant id: AzureTenantId of infra/aws/template.yaml (OIDC issuer https://sts.windows.net/<tenant>/).')
output tenantId string = subscription().tenantId

@description('Target storage account (the target container).')
output targetStorageAccountName string = targetStorage.name

@description('State storage account (checkpoint and run tables).')
output stateStorageAccountName string = stateAccounts[0].name

@description('Queue storage account (work queues).')
output queueStorageAccountName string = stateAccounts[1].name

@description('Target container.')
output targetContainerName string = targetContainer.name

@description('Functions host storage account.')
output hostStorageAccountName string = hostStorage.name

@description('Key Vault holding the webhook, the scheduled run spec and the Logic App key.')
output keyVaultName string = keyVault.name

@description('Application Insights resource (logs, workbook, alerts).')
output appInsightsName string = appInsights.name

@description('Resource id of the workbook.')
output workbookId string = workbook.id

@description('Logic App name, empty when it was not deployed.')
output logicAppName string = logicAppEnabled ? logicAppName : ''

@description('Resource id of the custom role that reads and writes blob index tags (assignable in this resource group), for granting it to another principal on the target container; empty unless syncTags is index.')
output blobIndexTagsRoleId string = tagsIndex ? targetContainerTags.outputs.roleDefinitionId : ''
