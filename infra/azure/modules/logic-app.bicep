// The Logic App (Consumption) that starts a bulk run and posts its summary to a webhook.
// main.bicep passes the workflow definition (infra/logic-app/workflow.json) and reads both
// secrets from Key Vault (getSecret), so no secret is written in a file or a parameter file.

@description('Logic App name.')
param name string

@description('Azure region.')
param location string

@description('Tags.')
param tags object

@description('Workflow definition (the contents of infra/logic-app/workflow.json).')
param definition object

@description('Base URL of the Function App, without a trailing slash: https://NAME.azurewebsites.net.')
param functionBaseUrl string

@description('Function key for /api/runs (from Key Vault).')
@secure()
param functionKey string

@description('Webhook that receives the run summary (from Key Vault).')
@secure()
param notifyWebhook string

@description('Source bucket of the run.')
param bucket string

@description('Source key prefix of the run.')
param prefix string

@description('Target container of the run.')
param container string

@description('Target blob prefix of the run.')
param targetPrefix string

resource workflow 'Microsoft.Logic/workflows@2019-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    state: 'Enabled'
    definition: definition
    parameters: {
      functionBaseUrl: {
        value: functionBaseUrl
      }
      functionKey: {
        value: functionKey
      }
      notifyWebhook: {
        value: notifyWebhook
      }
      bucket: {
        value: bucket
      }
      prefix: {
        value: prefix
      }
      container: {
        value: container
      }
      targetPrefix: {
        value: targetPrefix
      }
    }
  }
}

@description('Logic App resource id.')
output id string = workflow.id
